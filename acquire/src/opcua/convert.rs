//! OPC UA values → [`Value`]: every Variant either becomes a value or an error text, never a
//! panic; integers stay exact unless the point scales them.

use jiff::Timestamp;
use opcua::types::{DataValue, DateTime, StatusCode, Variant};
use shopfloor_devices::Value;
use shopfloor_devices::codec::scale;

/// 1601-01-01 (OPC UA epoch) → 1970-01-01, in 100 ns ticks.
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// An OPC UA timestamp as a [`Timestamp`]; `None` for the null time and out-of-range values.
pub(crate) fn timestamp(dt: &DateTime) -> Option<Timestamp> {
    if dt.is_null() {
        return None;
    }
    let nanos = (i128::from(dt.ticks()) - i128::from(UNIX_EPOCH_TICKS)) * 100;
    Timestamp::from_nanosecond(nanos).ok()
}

/// The engineering value of a data change: bad status → `Err`, otherwise the Variant
/// converted and scaled. Uncertain values are kept (the device vouches for them partly).
pub(crate) fn data_value(dv: &DataValue, k: f64, offset: f64) -> Result<Value, String> {
    let status = dv.status.unwrap_or(StatusCode::Good);
    if status.is_bad() {
        return Err(format!("bad status {status}"));
    }
    match &dv.value {
        None => Err(format!("no value (status {status})")),
        Some(v) => variant(v).map(|raw| scale(raw, k, offset)),
    }
}

/// A scalar Variant as a raw [`Value`].
pub(crate) fn variant(v: &Variant) -> Result<Value, String> {
    Ok(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(i) => Value::Int(i64::from(*i)),
        Variant::Int16(i) => Value::Int(i64::from(*i)),
        Variant::Int32(i) => Value::Int(i64::from(*i)),
        Variant::Int64(i) => Value::Int(*i),
        Variant::Byte(u) => Value::UInt(u64::from(*u)),
        Variant::UInt16(u) => Value::UInt(u64::from(*u)),
        Variant::UInt32(u) => Value::UInt(u64::from(*u)),
        Variant::UInt64(u) => Value::UInt(*u),
        Variant::Float(f) => finite(f64::from(*f))?,
        Variant::Double(f) => finite(*f)?,
        Variant::String(s) => Value::Text(s.value().clone().unwrap_or_default()),
        Variant::LocalizedText(t) => Value::Text(t.text.value().clone().unwrap_or_default()),
        Variant::DateTime(dt) => match timestamp(dt) {
            Some(ts) => Value::Text(ts.to_string()),
            None => return Err("null or out-of-range DateTime".into()),
        },
        // A status-code-typed variable (e.g. a device's last error) is a number to the agent.
        Variant::StatusCode(s) => Value::UInt(u64::from(s.bits())),
        Variant::Empty => return Err("empty value".into()),
        Variant::Array(_) => {
            return Err("arrays are not supported; select an element with its own node".into());
        }
        Variant::Variant(inner) => return variant(inner),
        other => return Err(format!("unsupported OPC UA type {}", type_name(other))),
    })
}

fn finite(f: f64) -> Result<Value, String> {
    if f.is_finite() {
        Ok(Value::Float(f))
    } else {
        Err(format!("not a finite number ({f})"))
    }
}

fn type_name(v: &Variant) -> &'static str {
    match v {
        Variant::Guid(_) => "Guid",
        Variant::ByteString(_) => "ByteString",
        Variant::XmlElement(_) => "XmlElement",
        Variant::QualifiedName(_) => "QualifiedName",
        Variant::NodeId(_) => "NodeId",
        Variant::ExpandedNodeId(_) => "ExpandedNodeId",
        Variant::ExtensionObject(_) => "ExtensionObject (structure)",
        Variant::DataValue(_) => "DataValue",
        Variant::DiagnosticInfo(_) => "DiagnosticInfo",
        _ => "value",
    }
}

/// A short human text of any Variant, for `browse` listings.
pub(crate) fn display(v: &Variant) -> String {
    match variant(v) {
        Ok(Value::Text(s)) => s,
        Ok(x) => x.to_string(),
        Err(_) => match v {
            Variant::Empty => String::new(),
            Variant::Array(a) => format!("[{} values]", a.values.len()),
            Variant::NodeId(n) => n.to_string(),
            Variant::QualifiedName(q) => q.to_string(),
            Variant::ByteString(b) => format!("<{} bytes>", b.value.as_ref().map_or(0, Vec::len)),
            other => format!("<{}>", type_name(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{ByteString, LocalizedText, UAString};

    #[test]
    fn every_scalar_type_converts_and_nothing_panics() {
        assert_eq!(variant(&Variant::Boolean(true)), Ok(Value::Bool(true)));
        assert_eq!(variant(&Variant::SByte(-3)), Ok(Value::Int(-3)));
        assert_eq!(variant(&Variant::Int16(-300)), Ok(Value::Int(-300)));
        assert_eq!(variant(&Variant::Int32(-70_000)), Ok(Value::Int(-70_000)));
        assert_eq!(variant(&Variant::Int64(i64::MIN)), Ok(Value::Int(i64::MIN)));
        assert_eq!(variant(&Variant::Byte(200)), Ok(Value::UInt(200)));
        assert_eq!(variant(&Variant::UInt16(60_000)), Ok(Value::UInt(60_000)));
        assert_eq!(
            variant(&Variant::UInt32(4_000_000_000)),
            Ok(Value::UInt(4_000_000_000))
        );
        assert_eq!(
            variant(&Variant::UInt64(u64::MAX)),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(variant(&Variant::Float(1.5)), Ok(Value::Float(1.5)));
        assert_eq!(variant(&Variant::Double(-2.25)), Ok(Value::Float(-2.25)));
        assert_eq!(
            variant(&Variant::String(UAString::from("A1"))),
            Ok(Value::Text("A1".into()))
        );
        assert_eq!(
            variant(&Variant::String(UAString::null())),
            Ok(Value::Text(String::new()))
        );
        assert_eq!(
            variant(&Variant::LocalizedText(Box::new(LocalizedText::new(
                "en",
                "Executing"
            )))),
            Ok(Value::Text("Executing".into()))
        );
        assert!(variant(&Variant::Double(f64::NAN)).is_err());
        assert!(variant(&Variant::Float(f32::INFINITY)).is_err());
        assert!(variant(&Variant::Empty).is_err());
        let garbage = variant(&Variant::ByteString(ByteString::from(vec![0xde, 0xad])));
        assert_eq!(
            garbage,
            Err("unsupported OPC UA type ByteString".to_string())
        );
    }

    #[test]
    fn scaling_keeps_exact_integers_and_bad_status_is_an_error() {
        let dv = DataValue::new_now(Variant::UInt64(u64::MAX));
        assert_eq!(data_value(&dv, 1.0, 0.0), Ok(Value::UInt(u64::MAX)));
        let dv = DataValue::new_now(Variant::Int32(1234));
        assert_eq!(
            data_value(&dv, 0.1, 1.0),
            Ok(Value::Float(1234.0 * 0.1 + 1.0))
        );
        let bad = DataValue {
            status: Some(StatusCode::BadNodeIdUnknown),
            ..Default::default()
        };
        assert_eq!(
            data_value(&bad, 1.0, 0.0),
            Err("bad status BadNodeIdUnknown".to_string())
        );
        assert!(data_value(&DataValue::default(), 1.0, 0.0).is_err());
    }

    #[test]
    fn opc_ua_time_is_unix_time() {
        let dt = DateTime::ymd_hms(2024, 5, 6, 7, 8, 9);
        assert_eq!(
            timestamp(&dt).map(|t| t.to_string()),
            Some("2024-05-06T07:08:09Z".to_string())
        );
        assert_eq!(timestamp(&DateTime::null()), None);
    }
}
