//! OPC UA client (in progress).
