//! `shopfloor-devices`: the device model without I/O. Modbus data types and byte orders
//! (`codec`), the read planner (`plan`), resolved points (`point`), device templates
//! (`template`) and signal-to-state rules (`signals`). Drivers (`shopfloor-acquire`) and the
//! simulator (`shopfloor-sim`) share it, so what the simulator serves is decoded by the same
//! code that the agent reads with.

pub mod codec;
pub mod plan;
pub mod point;
pub mod signals;
pub mod template;

pub use codec::{DataType, Layout, Order, StringLayout, Table, Value};
pub use point::{Deadband, Forbidden, ModbusPoint, NodeRef, OpcuaPoint, PlanLimits};
pub use template::{Overrides, Protocol, Template, TemplateError};
