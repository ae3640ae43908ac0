//! Kubernetes quantities (`100m`, `1.5Gi`) as numbers, so values compare by amount.

use serde_json::Value;

/// A Kubernetes quantity (`100m`, `1.5Gi`, `2`, `1e3`) as a number.
pub fn quantity(v: &Value) -> Option<f64> {
    let s = match v {
        Value::String(s) => s.as_str(),
        Value::Number(n) => return n.as_f64(),
        _ => return None,
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_read_as_amounts() {
        assert_eq!(quantity(&json!("100m")), Some(0.1));
        assert_eq!(quantity(&json!("1Gi")), Some(1024.0 * 1024.0 * 1024.0));
        assert_eq!(quantity(&json!("1.5k")), Some(1500.0));
        assert_eq!(quantity(&json!("2e3")), Some(2000.0));
        assert_eq!(quantity(&json!(3)), Some(3.0));
        assert_eq!(quantity(&json!("12x")), None);
        assert_eq!(quantity(&json!("abc")), None);
        assert_eq!(quantity(&json!(true)), None);
    }
}
