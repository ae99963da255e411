//! OPC UA simulator (in progress).
