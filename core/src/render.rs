//! Pictures of the rule graph: Graphviz dot, Mermaid and JSON.

use std::fmt::Write;

use crate::graph::RuleGraph;
use crate::project::Project;

/// The output format of `kiln graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON: `{"format_version":1,"nodes":[{"name","kind","deps"}]}`.
    Json,
}

fn quote_dot(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Renders `graph` in `format`. Nodes appear in topological order.
pub fn render(project: &Project, graph: &RuleGraph, format: GraphFormat) -> String {
    let rule = |n| &project[graph.rule_index(n)];
    let mut edges: Vec<(String, String)> = graph
        .edges()
        .map(|(a, b)| (rule(a).name.to_string(), rule(b).name.to_string()))
        .collect();
    edges.sort();
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            let _ = writeln!(out, "digraph {} {{", quote_dot(&project.name));
            out.push_str(
                "  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n",
            );
            for n in graph.order() {
                let r = rule(*n);
                let _ = writeln!(
                    out,
                    "  {} [label={}];",
                    quote_dot(r.name.as_str()),
                    quote_dot(&format!("{}\n{}", r.name, r.kind.value))
                );
            }
            for (a, b) in &edges {
                let _ = writeln!(out, "  {} -> {};", quote_dot(a), quote_dot(b));
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            let id = |s: &str| s.replace(['.', '-'], "_");
            for n in graph.order() {
                let r = rule(*n);
                let _ = writeln!(
                    out,
                    "  {}[\"{}<br/><i>{}</i>\"]",
                    id(r.name.as_str()),
                    r.name,
                    r.kind.value
                );
            }
            for (a, b) in &edges {
                let _ = writeln!(out, "  {} --> {}", id(a), id(b));
            }
        }
        GraphFormat::Json => {
            let nodes: Vec<serde_json::Value> = graph
                .order()
                .iter()
                .map(|n| {
                    let r = rule(*n);
                    let mut deps: Vec<String> = graph
                        .dependencies(*n)
                        .map(|d| rule(d).name.to_string())
                        .collect();
                    deps.sort();
                    serde_json::json!({"name": r.name, "kind": r.kind.value, "deps": deps})
                })
                .collect();
            out = serde_json::to_string_pretty(&serde_json::json!({
                "format_version": 1,
                "project": project.name,
                "nodes": nodes,
            }))
            .expect("json");
            out.push('\n');
        }
    }
    out
}
