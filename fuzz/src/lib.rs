//! Helpers shared by the fuzz targets.
//!
//! [`mutate`]: structure-aware mutation of a JSON document driven by fuzzer bytes, so that the
//! decoders behind a strict parser (the engine behind `evidence::parse`, the batch checks
//! behind `batch::open`) see many documents that are well-formed JSON of the right shape with
//! hostile values: any field replaced by an extreme number, a tricky string (times, zones,
//! paths, states), `null`, another type or another field's value; array elements repeated or
//! removed; digits inside strings changed (times and dates that are almost valid).

use serde_json::{Map, Number, Value};

const NUMBERS: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-7,
    5e-324,
    1e15,
    9.007_199_254_740_993e15,
    1e308,
    -1e308,
    f64::MAX,
    86_400_000.0,
    65_535.0,
    65_536.0,
    4_294_967_296.0,
];
const INTEGERS: &[i64] = &[
    0,
    1,
    -1,
    2,
    16,
    32,
    64,
    255,
    65_535,
    i64::MIN,
    i64::MAX,
    1_790_000_000_000,
    -62_135_596_800_000,
    253_402_300_799_999,
];
const STRINGS: &[&str] = &[
    "",
    "2026-10-12T08:00:00+08:00",
    "2026-10-12T00:00:00Z",
    "2026-03-29T02:30:00+01:00",
    "2026-02-29T00:00:00Z",
    "-009999-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999+14:00",
    "1970-01-01T00:00:00Z",
    "2026-10-12",
    "24:00",
    "00:00",
    "23:59",
    "Asia/Shanghai",
    "Europe/Berlin",
    "UTC",
    "America/St_Johns",
    "p1",
    "p1/e1",
    "p1/e1/w1",
    "p1/e1/w1/l1",
    "p1/e1/w1/l1/cnc-01",
    "p1/e1/w1/l1/cnc-01/em-01",
    "p1/e1//x",
    "producing",
    "setup",
    "delay",
    "idle",
    "planned_down",
    "offline",
    "electricity",
    "water",
    "natural_gas",
    "steam",
    "kWh",
    "m3",
    "discrete",
    "process",
    "cnc",
    "manual",
    "gbt2589-2020",
    "digital_workshop",
    "green_factory",
    "shopfloor.evidence/1",
    "shopfloor.batch/1",
    "NaN",
    "\u{0}",
    "é/Ω",
];

fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn number(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn parent(p: &str) -> Option<(&str, &str)> {
    p.rsplit_once('/')
}

/// Applies up to 16 edits, 4 bytes each (pointer index: 2 bytes, operation, argument).
pub fn mutate(doc: &mut Value, data: &[u8]) {
    for c in data.chunks_exact(4).take(16) {
        let mut ptrs = Vec::new();
        pointers(doc, String::new(), &mut ptrs);
        let idx = usize::from(u16::from_le_bytes([c[0], c[1]])) % ptrs.len().max(1);
        let Some(p) = ptrs.get(idx).cloned() else {
            return;
        };
        let (op, arg) = (c[2], usize::from(c[3]));
        let other = ptrs.get(arg % ptrs.len()).cloned().unwrap_or_default();
        let other_value = doc.pointer(&other).cloned().unwrap_or(Value::Null);
        match op % 10 {
            0 => set(doc, &p, number(NUMBERS[arg % NUMBERS.len()])),
            1 => set(doc, &p, Value::from(INTEGERS[arg % INTEGERS.len()])),
            2 => set(doc, &p, Value::from(STRINGS[arg % STRINGS.len()])),
            3 => set(
                doc,
                &p,
                match arg % 5 {
                    0 => Value::Null,
                    1 => Value::Bool(true),
                    2 => Value::Bool(false),
                    3 => Value::Array(Vec::new()),
                    _ => Value::Object(Map::new()),
                },
            ),
            4 => set(doc, &p, other_value),
            5 => repeat(doc, &p, arg),
            6 => remove(doc, &p),
            7 => tweak_number(doc, &p, arg),
            8 => tweak_digit(doc, &p, arg),
            _ => {
                // A field of one object moved into another (or the same one again).
                if let (Some((_, key)), Some(Value::Object(m))) =
                    (parent(&p), doc.pointer_mut(&other))
                {
                    let key = key.replace("~1", "/").replace("~0", "~");
                    m.insert(key, Value::Null);
                }
            }
        }
    }
}

fn set(doc: &mut Value, p: &str, v: Value) {
    if let Some(slot) = doc.pointer_mut(p) {
        *slot = v;
    }
}

/// Repeats an array element (or the last one of an array) `1 + arg % 4` times.
fn repeat(doc: &mut Value, p: &str, arg: usize) {
    let (array, i) = match doc.pointer(p) {
        Some(Value::Array(a)) if !a.is_empty() => (p.to_owned(), a.len() - 1),
        _ => match parent(p) {
            Some((a, i)) => match i.parse::<usize>() {
                Ok(i) => (a.to_owned(), i),
                Err(_) => return,
            },
            None => return,
        },
    };
    if let Some(Value::Array(a)) = doc.pointer_mut(&array)
        && let Some(x) = a.get(i).cloned()
    {
        for _ in 0..1 + arg % 4 {
            if a.len() < 4096 {
                a.insert(i, x.clone());
            }
        }
    }
}

fn remove(doc: &mut Value, p: &str) {
    let Some((at, key)) = parent(p) else {
        return;
    };
    match doc.pointer_mut(at) {
        Some(Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        Some(Value::Object(m)) => {
            m.remove(&key.replace("~1", "/").replace("~0", "~"));
        }
        _ => {}
    }
}

fn tweak_number(doc: &mut Value, p: &str, arg: usize) {
    let Some(slot) = doc.pointer_mut(p) else {
        return;
    };
    let Some(x) = slot.as_f64() else {
        return;
    };
    let d = arg as f64 - 128.0;
    let y = match arg % 4 {
        0 => x + d,
        1 => x * d,
        2 => x / 1000.0,
        _ => -x,
    };
    *slot = match (slot.as_i64(), arg % 4) {
        (Some(i), 0) => Value::from(i.wrapping_add(arg as i64 - 128)),
        (Some(i), 3) => Value::from(i.wrapping_neg()),
        _ => number(y),
    };
}

/// Changes one digit of a string (times and dates stay almost valid).
fn tweak_digit(doc: &mut Value, p: &str, arg: usize) {
    let Some(Value::String(s)) = doc.pointer_mut(p) else {
        return;
    };
    let digits: Vec<usize> = s
        .char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    if let Some(&i) = digits.get(arg % digits.len().max(1)) {
        let d = char::from(b'0' + (arg / 16 % 10) as u8);
        s.replace_range(i..i + 1, d.encode_utf8(&mut [0; 4]));
    }
}
