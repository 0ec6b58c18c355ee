//! The session pods' resource requests and limits, fleet-wide (`--session-resources`, chart
//! `session.resources`); a session's `spec.pod.resources` still wins. Checked when the operator
//! starts, so a typo stops one Deployment rollout instead of failing every session pod's create.

use k8s_openapi::api::core::v1::ResourceRequirements;

/// The default, sized from the benchmark of a connected idle session (≤ 12 MiB RSS) with
/// headroom for media and history bursts. Changing it changes every pod's spec hash (a rollout
/// of every session), so it stays as released.
pub const DEFAULT: &str =
    r#"{"requests":{"cpu":"10m","memory":"24Mi"},"limits":{"memory":"128Mi"}}"#;

/// `--session-resources`: Kubernetes' `ResourceRequirements` as JSON, every quantity well formed
/// and no request above its limit (what the API server would refuse at pod create).
pub fn parse(s: &str) -> Result<ResourceRequirements, String> {
    let not_one = |e: serde_json::Error| format!("not a ResourceRequirements object: {e}");
    let mut v: serde_json::Value = serde_json::from_str(s).map_err(not_one)?;
    if let Some(unknown) = v.as_object().and_then(|o| {
        o.keys()
            .find(|k| !["requests", "limits", "claims"].contains(&k.as_str()))
    }) {
        return Err(format!("unknown field {unknown:?} (requests, limits)"));
    }
    // YAML's `cpu: 1` arrives as a number; Kubernetes reads it as the quantity "1".
    for side in ["requests", "limits"] {
        if let Some(map) = v.get_mut(side).and_then(|m| m.as_object_mut()) {
            for q in map.values_mut() {
                if let serde_json::Value::Number(n) = q {
                    *q = serde_json::Value::String(n.to_string());
                }
            }
        }
    }
    let r: ResourceRequirements = serde_json::from_value(v).map_err(not_one)?;
    let value = |side: &str, name: &str, q: &str| {
        quantity(q).ok_or_else(|| format!("{side}.{name}: {q:?} is not a Kubernetes quantity"))
    };
    let empty = Default::default();
    let requests = r.requests.as_ref().unwrap_or(&empty);
    let limits = r.limits.as_ref().unwrap_or(&empty);
    for (name, q) in limits {
        value("limits", name, &q.0)?;
    }
    for (name, q) in requests {
        let request = value("requests", name, &q.0)?;
        if let Some(limit) = limits.get(name)
            && request > value("limits", name, &limit.0)?
        {
            return Err(format!(
                "requests.{name} ({}) is above limits.{name} ({})",
                q.0, limit.0
            ));
        }
    }
    Ok(r)
}

/// The value of a Kubernetes quantity (`<signed number><suffix>`: `100m`, `24Mi`, `1.5G`, `1e3`),
/// or `None` when it is not one. Precise enough to compare a request with its limit.
pub fn quantity(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(digits_end);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    let well_formed = number.matches('.').count() <= 1
        && (!whole.is_empty() || fraction.is_some_and(|f| !f.is_empty()));
    if !well_formed {
        return None;
    }
    let scale = match suffix {
        "" => 1.0,
        "Ki" => 2f64.powi(10),
        "Mi" => 2f64.powi(20),
        "Gi" => 2f64.powi(30),
        "Ti" => 2f64.powi(40),
        "Pi" => 2f64.powi(50),
        "Ei" => 2f64.powi(60),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exp => {
            let digits = exp.strip_prefix(['e', 'E'])?;
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(digits.parse().ok()?)
        }
    };
    let n: f64 = number.parse().ok()?;
    let sign = if s.starts_with('-') { -1.0 } else { 1.0 };
    Some(sign * n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(quantity("10m"), Some(0.01));
        assert_eq!(quantity("24Mi"), Some(24.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("1.5G"), Some(1.5e9));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("2E-1"), Some(0.2));
        assert_eq!(quantity("1E"), Some(1e18), "E alone is exa");
        assert_eq!(quantity(".5"), Some(0.5));
        assert_eq!(quantity("128"), Some(128.0));
        assert_eq!(quantity("-1"), Some(-1.0));
        for bad in [
            "", "Mi", "24MB", "1.2.3", "ten", "1e", "1e+", "24 Mi", ".", "1i",
        ] {
            assert_eq!(quantity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_default_parses_and_bad_settings_say_what_is_wrong() {
        let d = parse(DEFAULT).unwrap();
        assert_eq!(d.requests.unwrap()["memory"].0, "24Mi");
        assert_eq!(d.limits.unwrap()["memory"].0, "128Mi");
        let ok = parse(r#"{"requests":{"cpu":"5m","memory":"8Mi"},"limits":{"memory":"8Mi"}}"#);
        assert!(ok.is_ok(), "{ok:?}");
        assert!(
            parse("{}").is_ok(),
            "no requests or limits: the namespace's defaults"
        );

        let err = |s: &str| parse(s).unwrap_err();
        assert!(err("memory: 24Mi").contains("not a ResourceRequirements"));
        assert!(err(r#"{"request":{"memory":"8Mi"}}"#).contains("unknown field \"request\""));
        assert!(err(r#"{"requests":{"memory":"24MB"}}"#).contains("requests.memory: \"24MB\""));
        assert!(err(r#"{"limits":{"cpu":"lots"}}"#).contains("limits.cpu"));
        let above = err(r#"{"requests":{"memory":"256Mi"},"limits":{"memory":"128Mi"}}"#);
        assert!(
            above.contains("requests.memory (256Mi) is above limits.memory (128Mi)"),
            "{above}"
        );
        // 1Gi is more than 1G: the units are compared, not the digits.
        assert!(parse(r#"{"requests":{"memory":"1G"},"limits":{"memory":"1Gi"}}"#).is_ok());
        assert!(parse(r#"{"requests":{"memory":"1Gi"},"limits":{"memory":"1G"}}"#).is_err());
    }
}
