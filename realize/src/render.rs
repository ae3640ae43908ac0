//! The plan as text for humans.

use crate::plan::{Action, Plan};

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
            Action::Create => "+",
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
        for k in &c.secret_values_changed {
            let _ = writeln!(out, "    data.{k}: (value changed)");
        }
        if let Some(d) = &c.diff {
            for line in d.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    let count = |a| plan.summary.get(&a).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "plan: {} to create, {} to update, {} drifted, {} to delete, {} unchanged",
        count(Action::Create),
        count(Action::Update),
        count(Action::Drift),
        count(Action::Delete),
        count(Action::Unchanged)
    );
    out
}
