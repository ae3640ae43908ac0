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

/// The form the API server stores quantity `s` in (`1000m` → `1`, `1024Mi` → `1Gi`, `0.5` →
/// `500m`, `0.5Gi` → `512Mi`), as Kubernetes' `Quantity.CanonicalizeBytes` writes it: the
/// suffix family of the input (decimal, binary, exponent), an integer mantissa, the largest
/// suffix that keeps it whole; a binary quantity under 1024 or with a fraction is written in
/// decimal. `None` when `s` is no quantity or canonicalizing it would round (below a nano).
pub fn canonical(s: &str) -> Option<String> {
    const NANO: i128 = 1_000_000_000;
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (negative, digits) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || whole.len() > 24
        || frac.len() > 9
    {
        return None;
    }
    // The amount in nano units, exactly.
    let mut nanos: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    nanos = nanos.checked_mul(NANO)?;
    if !frac.is_empty() {
        let f: i128 = frac.parse().ok()?;
        nanos += f * 10i128.pow(9 - frac.len() as u32);
    }
    enum Family {
        Decimal,
        Binary,
        Exponent,
    }
    let (family, mul, div): (Family, i128, i128) = match suffix {
        "" => (Family::Decimal, 1, 1),
        "n" => (Family::Decimal, 1, NANO),
        "u" => (Family::Decimal, 1, 1_000_000),
        "m" => (Family::Decimal, 1, 1_000),
        "k" => (Family::Decimal, 1_000, 1),
        "M" => (Family::Decimal, 1_000_000, 1),
        "G" => (Family::Decimal, NANO, 1),
        "T" => (Family::Decimal, 1_000_000_000_000, 1),
        "P" => (Family::Decimal, 10i128.pow(15), 1),
        "E" => (Family::Decimal, 10i128.pow(18), 1),
        "Ki" => (Family::Binary, 1 << 10, 1),
        "Mi" => (Family::Binary, 1 << 20, 1),
        "Gi" => (Family::Binary, 1 << 30, 1),
        "Ti" => (Family::Binary, 1 << 40, 1),
        "Pi" => (Family::Binary, 1 << 50, 1),
        "Ei" => (Family::Binary, 1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if exp.abs() > 18 {
                return None;
            }
            let p = 10i128.pow(exp.unsigned_abs());
            if exp >= 0 {
                (Family::Exponent, p, 1)
            } else {
                (Family::Exponent, 1, p)
            }
        }
        _ => return None,
    };
    nanos = nanos.checked_mul(mul)?;
    if nanos % div != 0 {
        return None;
    }
    nanos /= div;
    if nanos == 0 {
        return Some("0".to_owned());
    }
    let sign = if negative { "-" } else { "" };
    let binary_whole =
        matches!(family, Family::Binary) && nanos % NANO == 0 && (nanos / NANO).abs() >= 1024;
    if binary_whole {
        let mut v = nanos / NANO;
        let mut exp = 0;
        while exp < 6 && v % 1024 == 0 {
            v /= 1024;
            exp += 1;
        }
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
        return Some(format!("{sign}{v}{suffix}"));
    }
    // Decimal (or exponent): mantissa * 10^exp, exp a multiple of 3 from -9.
    let mut v = nanos;
    let mut exp: i32 = -9;
    while v % 1000 == 0 && exp < 18 {
        v /= 1000;
        exp += 3;
    }
    let suffix = match family {
        Family::Exponent => match exp {
            0 => String::new(),
            e => format!("e{e}"),
        },
        _ => match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        }
        .to_owned(),
    };
    Some(format!("{sign}{v}{suffix}"))
}

/// Writes the quantities of a built-in object (resources of containers and claims, quotas,
/// limit ranges, `emptyDir.sizeLimit`) in the form the API server stores them, so that a
/// server-side apply of it by another field manager (`kubectl diff --server-side`) meets the
/// same values and no conflict. Custom resources are left alone (their quantities are stored
/// as written).
pub fn canonicalize_quantities(obj: &mut Value) {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if !matches!(group, "" | "apps" | "batch") {
        return;
    }
    let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
    let pod = match kind.as_str() {
        "Pod" => Some("/spec"),
        "PodTemplate" => Some("/template/spec"),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    };
    if let Some(spec) = pod.and_then(|p| obj.pointer_mut(p)) {
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                resources(c.get_mut("resources"));
            }
        }
        values(spec.get_mut("overhead"));
        for v in spec
            .get_mut("volumes")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(limit) = v.pointer_mut("/emptyDir/sizeLimit") {
                one(limit);
            }
        }
    }
    match kind.as_str() {
        "PersistentVolumeClaim" => resources(obj.pointer_mut("/spec/resources")),
        "StatefulSet" => {
            let claims = obj.pointer_mut("/spec/volumeClaimTemplates");
            for c in claims.and_then(Value::as_array_mut).into_iter().flatten() {
                resources(c.pointer_mut("/spec/resources"));
            }
        }
        "ResourceQuota" => values(obj.pointer_mut("/spec/hard")),
        "LimitRange" => {
            let limits = obj.pointer_mut("/spec/limits");
            for l in limits.and_then(Value::as_array_mut).into_iter().flatten() {
                for field in [
                    "max",
                    "min",
                    "default",
                    "defaultRequest",
                    "maxLimitRequestRatio",
                ] {
                    values(l.get_mut(field));
                }
            }
        }
        _ => {}
    }
}

fn resources(r: Option<&mut Value>) {
    if let Some(r) = r {
        values(r.get_mut("limits"));
        values(r.get_mut("requests"));
    }
}

fn values(map: Option<&mut Value>) {
    if let Some(Value::Object(m)) = map {
        m.values_mut().for_each(one);
    }
}

fn one(v: &mut Value) {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    if let Some(c) = canonical(&text) {
        *v = Value::String(c);
    }
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

    #[test]
    fn quantities_are_written_as_the_api_server_stores_them() {
        for (given, stored) in [
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("2000000", "2M"),
            ("100m", "100m"),
            ("0", "0"),
            ("0m", "0"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("512Ki", "512Ki"),
            ("1Ki", "1Ki"),
            ("1.5Ki", "1536"),
            ("0.5Ki", "512"),
            ("1e3", "1e3"),
            ("1000e0", "1e3"),
            ("2", "2"),
            ("-1000m", "-1"),
            ("250m", "250m"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("123Mi", "123Mi"),
        ] {
            assert_eq!(canonical(given).as_deref(), Some(stored), "{given}");
        }
        for lossy_or_bad in ["0.0000000001", "abc", "1x", "", "1.5.5", "1e99"] {
            assert_eq!(canonical(lossy_or_bad), None, "{lossy_or_bad}");
        }
    }

    #[test]
    fn only_built_in_quantity_fields_are_rewritten() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {
            "containers": [{"name": "c", "resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"},
                                                       "requests": {"cpu": 2}}, "args": ["1000m"]}],
            "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1024Mi"}}]}}}});
        canonicalize_quantities(&mut d);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["resources"]["limits"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(c["resources"]["requests"]["cpu"], "2");
        assert_eq!(c["args"][0], "1000m", "not a quantity field");
        assert_eq!(
            d["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"],
            "1Gi"
        );
        let mut cr = json!({"apiVersion": "example.io/v1", "kind": "Deployment",
                            "spec": {"template": {"spec": {"containers": [{"resources": {"limits": {"cpu": "1000m"}}}]}}}});
        let before = cr.clone();
        canonicalize_quantities(&mut cr);
        assert_eq!(cr, before, "custom resources keep what they say");
    }
}
