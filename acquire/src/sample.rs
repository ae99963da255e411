//! What acquisition produces: samples and link events, for every protocol alike.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use shopfloor_devices::Value;

/// One value of one point.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Device id (entity path).
    pub device: Arc<str>,
    /// Point name.
    pub point: Arc<str>,
    /// When the device says the value was taken (OPC UA source timestamp), if it says.
    pub source_time: Option<Timestamp>,
    /// When the agent received it.
    pub received: Timestamp,
    /// The engineering value, or why there is none (decode error, bad status, exception).
    pub value: Result<Value, String>,
}

/// Link state of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connected and answering.
    Up,
    /// Not connected; reconnecting with backoff.
    Down,
}

/// Everything a driver reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Sample(Sample),
    /// Samples read together (the points of one Modbus request), all of one device, in
    /// point order: one event instead of one per point, so that the channel, the metrics and
    /// the pipeline's device lookup cost once per request at 100,000 tags/s.
    Samples(Vec<Sample>),
    /// The link of a device changed state; `detail` says why (error text, endpoint).
    Link {
        device: Arc<str>,
        state: LinkState,
        detail: String,
    },
    /// One request/response round trip (Modbus request, OPC UA service call) and its outcome.
    Request {
        device: Arc<str>,
        rtt: Duration,
        outcome: Outcome,
    },
}

/// Outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The device answered with an exception / bad status: the link is fine.
    Exception,
    Timeout,
    /// Transport, framing or protocol error: the connection was dropped.
    LinkError,
}

impl Event {
    /// The samples this event carries: one for [`Event::Sample`], all for
    /// [`Event::Samples`], none for link and request events.
    pub fn samples(&self) -> &[Sample] {
        match self {
            Event::Sample(s) => std::slice::from_ref(s),
            Event::Samples(v) => v,
            Event::Link { .. } | Event::Request { .. } => &[],
        }
    }
}
