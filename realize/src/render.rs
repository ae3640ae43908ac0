//! What users read of a plan and an apply: the plan as text for humans, as JSON (format
//! version [`PLAN_JSON_FORMAT`](crate::plan::PLAN_JSON_FORMAT)), and the one-line summaries.

use serde_json::{json, Value};

use crate::api::ClusterApi;
use crate::applying::{ApplyEvent, ApplyReport, Written};
use crate::plan::{Action, Plan};
use crate::planning::Realized;

/// The plan as `--json` prints it: the plan, the HTTP counts, the warnings, and for apply and
/// destroy what was done.
pub fn json<C: ClusterApi>(r: &Realized<C>, done: Option<&ApplyReport>) -> Value {
    let mut v = serde_json::to_value(&r.plan).expect("plan serializes");
    if let Some(report) = done {
        v["applied"] = json!(report);
    }
    v["http"] = json!(r.cluster.counts());
    v["warnings"] = json!(r.warnings);
    v
}

/// One line per object written or deleted, as apply and destroy print them when it happens.
pub fn written(w: &Written) -> String {
    let done = match w.action {
        Action::Create => "created",
        Action::Adopt => "adopted",
        Action::Update => "updated",
        Action::Drift => "reverted",
        Action::Delete => "deleted",
        Action::Unchanged => "kept",
    };
    format!("{done:<9} {}  (rule `{}`)", w.object, w.rule)
}

/// The line apply prints for `event`: a write (see [`written`]), or a gate's progress.
pub fn event(event: &ApplyEvent<'_>) -> String {
    match event {
        ApplyEvent::Written(w) => written(w),
        ApplyEvent::Waiting {
            object,
            rule,
            progress,
        } => format!("{:<9} {object}: {progress}  (rule `{rule}`)", "waiting"),
    }
}

/// The last line of `kiln apply`.
pub fn applied(report: &ApplyReport) -> String {
    format!(
        "applied {} objects, deleted {} ({} requests, {} writes)",
        report.applied, report.deleted, report.requests, report.writes
    )
}

/// The last line of `kiln destroy`; `scoped`: with `--rule`, the parent stays.
pub fn destroyed(report: &ApplyReport, scoped: bool) -> String {
    let parent = if scoped {
        "the parent kept"
    } else {
        "the parent included"
    };
    format!(
        "deleted {} objects, {parent} ({} requests, {} writes)",
        report.deleted, report.requests, report.writes
    )
}

/// The plan as text for humans.
pub fn render(plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for c in plan
        .changes
        .iter()
        .filter(|c| c.action != Action::Unchanged)
    {
        let sign = match c.action {
            Action::Create | Action::Adopt => "+",
            Action::Update => "~",
            Action::Drift => "!",
            Action::Delete => "-",
            Action::Unchanged => " ",
        };
        let key = c.key();
        let _ = writeln!(
            out,
            "{sign} {:<9} {key}  (rule `{}`)",
            format!("{:?}", c.action).to_lowercase(),
            c.rule
        );
        if c.orphan {
            let _ = writeln!(
                out,
                "    orphan: a member whose kind the ApplySet parent does not list"
            );
        }
        if !c.drifted_fields.is_empty() {
            let _ = writeln!(
                out,
                "    changed outside kiln: {}",
                c.drifted_fields.join(", ")
            );
        }
        if let Some(conflict) = &c.conflict {
            let _ = writeln!(
                out,
                "    conflict: {conflict} (--force-conflicts takes the fields)"
            );
        }
        for k in &c.secret_values_changed {
            let _ = writeln!(out, "    data.{k}: (value changed)");
        }
        if let Some(d) = &c.diff {
            for line in d.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    // Unchanged objects that are not ready yet (an interrupted apply's rollout): apply writes
    // nothing for them but waits for their gates.
    for c in &plan.changes {
        if let (Action::Unchanged, Some(condition)) = (c.action, c.not_ready) {
            let _ = writeln!(
                out,
                "  {:<9} {}  (rule `{}`): apply waits for {condition}",
                "not ready",
                c.key(),
                c.rule
            );
        }
    }
    // Objects the server could not dry-run, one line per reason (a first apply into a new
    // namespace would otherwise add a line per object); `--json` has each with its rule.
    let mut unchecked: std::collections::BTreeMap<&str, (usize, std::collections::BTreeSet<&str>)> =
        std::collections::BTreeMap::new();
    for c in &plan.changes {
        if let Some(why) = &c.unchecked {
            let e = unchecked.entry(why.as_str()).or_default();
            e.0 += 1;
            e.1.insert(c.rule.as_str());
        }
    }
    for (why, (n, rules)) in &unchecked {
        let rules: Vec<&str> = rules.iter().copied().collect();
        let _ = writeln!(
            out,
            "not dry-run: {n} objects (rules `{}`): {why}",
            rules.join("`, `")
        );
    }
    let shared = plan
        .changes
        .iter()
        .filter(|c| c.shared_with.is_some())
        .count();
    if shared > 0 {
        let _ = writeln!(
            out,
            "shared: {shared} objects are identical in this environment's base set, which keeps owning them"
        );
    }
    let count = |a| plan.summary.get(&a).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "plan: {} to create, {} to adopt, {} to update, {} drifted, {} to delete, {} unchanged",
        count(Action::Create),
        count(Action::Adopt),
        count(Action::Update),
        count(Action::Drift),
        count(Action::Delete),
        count(Action::Unchanged)
    );
    out
}

/// The plan text of [`render`] with ANSI colours for a terminal: creates green, updates
/// yellow, drift magenta, deletes red; in diffs, added lines green and removed ones red.
pub fn colorize(text: &str) -> String {
    const GREEN: &str = "32";
    const YELLOW: &str = "33";
    const RED: &str = "31";
    const MAGENTA: &str = "35";
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let code = if body.starts_with("+ create") || body.starts_with("+ adopt") {
            Some(GREEN)
        } else if body.starts_with("~ update") {
            Some(YELLOW)
        } else if body.starts_with("! drift") {
            Some(MAGENTA)
        } else if body.starts_with("- delete") {
            Some(RED)
        } else if let Some(diff) = body.strip_prefix("    ") {
            if diff.starts_with("+++") || diff.starts_with("---") {
                None
            } else if diff.starts_with('+') {
                Some(GREEN)
            } else if diff.starts_with('-') {
                Some(RED)
            } else {
                None
            }
        } else {
            None
        };
        match code {
            Some(c) => {
                out.push_str(&format!("\u{1b}[{c}m{body}\u{1b}[0m"));
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::applying::{apply, apply_reporting, ApplyOptions};
    use crate::applyset::Parent;
    use crate::fake::FakeCluster;
    use crate::planning::{plan_set, PlanOptions, Wanted};

    fn ns() -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    }

    fn cm(name: &str, value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "shop"}, "data": {"mode": value}})
    }

    fn secret(password: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "creds", "namespace": "shop"},
               "stringData": {"password": password}})
    }

    fn wanted(objects: Vec<Value>) -> Wanted {
        Wanted::of_rules(
            Parent::for_project("shop", "prod", "default"),
            vec![("base", vec![], vec![ns()]), ("app", vec![0], objects)],
        )
    }

    fn options() -> ApplyOptions {
        ApplyOptions {
            force_conflicts: false,
            wait: true,
            skip_workload_gates: false,
            timeout: std::time::Duration::from_secs(5),
            yes: true,
            parallel: 1,
        }
    }

    /// What users read of a second run that updates a value and a secret, adds an object and
    /// prunes another: the text plan, the JSON plan and the apply summary. A change to any of
    /// them is a reviewed snapshot diff; the secret's values never appear.
    #[tokio::test(start_paused = true)]
    async fn plan_and_apply_output() {
        let first = wanted(vec![
            cm("config", "fast"),
            cm("old", "x"),
            secret("hunter2"),
        ]);
        let r = plan_set(
            FakeCluster::default(),
            first,
            &PlanOptions::default(),
            |_, _| {},
        )
        .await
        .unwrap();
        insta::assert_snapshot!("first_plan", render(&r.plan));
        let report = apply(&r, &options(), |_| true).await.unwrap();
        insta::assert_snapshot!("first_apply", applied(&report));

        let second = wanted(vec![
            cm("config", "safe"),
            cm("new", "y"),
            secret("correct horse"),
        ]);
        let options_plan = PlanOptions {
            find_orphans: true,
            ..PlanOptions::default()
        };
        let r = plan_set(r.cluster, second, &options_plan, |_, _| {})
            .await
            .unwrap();
        let text = render(&r.plan);
        assert!(!text.contains("hunter2") && !text.contains("correct horse"));
        insta::assert_snapshot!("second_plan", text);
        let lines = std::sync::Mutex::new(Vec::new());
        let on_event = |e: ApplyEvent<'_>| lines.lock().unwrap().push(event(&e));
        let report = apply_reporting(&r, &options(), |_| true, &on_event)
            .await
            .unwrap();
        insta::assert_snapshot!("second_apply_lines", lines.lock().unwrap().join("\n"));
        let out = json(&r, Some(&report));
        assert!(!out.to_string().contains("hunter2") && !out.to_string().contains("correct horse"));
        insta::assert_json_snapshot!("second_apply_json", out);
        insta::assert_snapshot!("second_apply", applied(&report));
    }

    #[test]
    fn colours_follow_the_action_and_the_diff() {
        let text = "+ create    ConfigMap shop/a  (rule `a`)\n~ update    ConfigMap shop/b  (rule `b`)\n    --- live\n    +++ desired\n    -  mode: x\n    +  mode: y\n! drift     ConfigMap shop/c  (rule `c`)\n- delete    ConfigMap shop/d  (rule `?`)\nplan: 1 to create\n";
        let c = colorize(text);
        assert!(c.contains("\u{1b}[32m+ create"));
        assert!(c.contains("\u{1b}[33m~ update"));
        assert!(c.contains("\u{1b}[35m! drift"));
        assert!(c.contains("\u{1b}[31m- delete"));
        assert!(c.contains("\u{1b}[31m    -  mode: x") || c.contains("\u{1b}[31m-  mode: x"));
        assert!(c.contains("    --- live\n"), "headers stay plain");
        assert!(c.ends_with("plan: 1 to create\n"));
        let plain: String = c
            .replace("\u{1b}[0m", "")
            .split("\u{1b}[")
            .enumerate()
            .map(|(i, p)| {
                if i == 0 {
                    p.to_owned()
                } else {
                    p[3..].to_owned()
                }
            })
            .collect();
        assert_eq!(plain, text, "only colour codes are added");
    }
}
