//! `kiln plan --html FILE`: the plan as one self-contained HTML page. The rule DAG is drawn
//! as SVG (layered by dependency depth), each rule coloured by what the plan does to its
//! objects; a click on a rule lists its objects with their diffs; the summary is on top.
//! Everything comes from the plan as `--json` prints it, so no secret value can appear.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

/// One rule of the graph, placed.
struct Node<'a> {
    name: &'a str,
    kind: &'a str,
    deps: Vec<&'a str>,
    layer: usize,
    row: usize,
}

/// What the plan does to a rule's objects, worst first: the colour it gets.
const STATES: &[&str] = &[
    "delete",
    "drift",
    "update",
    "create",
    "adopt",
    "unchanged",
    "none",
];

fn state_of(actions: &[&str]) -> &'static str {
    STATES
        .iter()
        .find(|s| actions.contains(s))
        .copied()
        .unwrap_or("none")
}

/// Layers by longest path from a rule without dependencies; rows by name within a layer.
fn place<'a>(graph: &'a Value) -> Vec<Node<'a>> {
    let mut nodes: Vec<Node<'a>> = graph["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| Node {
            name: n["name"].as_str().unwrap_or_default(),
            kind: n["kind"].as_str().unwrap_or_default(),
            deps: n["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect(),
            layer: 0,
            row: 0,
        })
        .collect();
    let index: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect();
    // The graph is acyclic (the loader refuses cycles): relax until nothing moves.
    for _ in 0..nodes.len() {
        let mut moved = false;
        for i in 0..nodes.len() {
            let layer = nodes[i]
                .deps
                .iter()
                .filter_map(|d| index.get(d))
                .map(|&d| nodes[d].layer + 1)
                .max()
                .unwrap_or(0);
            if layer != nodes[i].layer {
                nodes[i].layer = layer;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut by_layer: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        by_layer.entry(n.layer).or_default().push(i);
    }
    for members in by_layer.values_mut() {
        members.sort_by_key(|&i| nodes[i].name);
        for (row, &i) in members.iter().enumerate() {
            nodes[i].row = row;
        }
    }
    nodes
}

/// Text for HTML (element content and attribute values).
/// `value` as JSON to embed in a `<script type="application/json">` element: `<`, `>` and
/// `&` are written as `\u003c`, `\u003e`, `\u0026` (JSON's own escapes, read back as the
/// same text), so no value can close the element (`</script>`) or put the parser into the
/// script-data escaped states (`<!--`, `<script>`) that would swallow the page after it.
fn script_data(value: &serde_json::Value) -> String {
    let json = serde_json::to_string(value).expect("plan serializes");
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const NODE_W: usize = 190;
const NODE_H: usize = 30;
const COL: usize = 240;
const ROW: usize = 44;

fn svg(nodes: &[Node<'_>], states: &BTreeMap<&str, &str>) -> String {
    let width = nodes.iter().map(|n| n.layer).max().unwrap_or(0) * COL + NODE_W + 20;
    let height = nodes.iter().map(|n| n.row).max().unwrap_or(0) * ROW + NODE_H + 20;
    let at = |n: &Node<'_>| (10 + n.layer * COL, 10 + n.row * ROW);
    let index: BTreeMap<&str, &Node<'_>> = nodes.iter().map(|n| (n.name, n)).collect();
    let mut out = format!(
        "<svg id=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n"
    );
    for n in nodes {
        let (x, y) = at(n);
        for d in &n.deps {
            if let Some(dep) = index.get(d) {
                let (dx, dy) = at(dep);
                let (x1, y1, x2, y2) = (dx + NODE_W, dy + NODE_H / 2, x, y + NODE_H / 2);
                let mid = (x1 + x2) / 2;
                let _ = writeln!(
                    out,
                    "<path class=\"edge\" d=\"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}\"/>"
                );
            }
        }
    }
    for n in nodes {
        let (x, y) = at(n);
        let state = states.get(n.name).copied().unwrap_or("none");
        let name = escape(n.name);
        let _ = writeln!(
            out,
            "<g class=\"rule {state}{removed}\" data-rule=\"{name}\" data-state=\"{state}\" tabindex=\"0\"><title>{name} ({kind}): {state}</title><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/><text x=\"{tx}\" y=\"{ty}\">{label}</text></g>",
            kind = escape(n.kind),
            removed = if n.kind == "removed" { " removed" } else { "" },
            tx = x + 8,
            ty = y + 20,
            label = escape(&truncate(n.name, 24)),
        );
    }
    out.push_str("</svg>\n");
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max - 1).collect::<String>() + "…"
    }
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; }
header { padding: 16px 24px; background: #f4f6fa; border-bottom: 1px solid #dde2ea; }
h1 { font-size: 18px; margin: 0 0 8px; }
.counts span { display: inline-block; margin-right: 14px; }
.counts b { font-size: 16px; }
main { display: flex; gap: 16px; padding: 16px 24px; align-items: flex-start; }
#graph { overflow: auto; border: 1px solid #dde2ea; border-radius: 6px; flex: 1 1 auto; max-height: 80vh; }
#details { flex: 0 0 38%; max-height: 80vh; overflow: auto; }
.edge { fill: none; stroke: #a6adbb; stroke-width: 1.2; }
.rule rect { stroke: #4b5363; stroke-width: 1; cursor: pointer; }
.rule text { font-size: 12px; pointer-events: none; fill: #111; }
.rule.selected rect { stroke-width: 3; }
.create rect, .adopt rect { fill: #b7e4c7; } .swatch.create, .swatch.adopt { background: #b7e4c7; }
.update rect { fill: #ffe08a; } .swatch.update { background: #ffe08a; }
.drift rect { fill: #e4b5f0; } .swatch.drift { background: #e4b5f0; }
.delete rect { fill: #f4a6a6; } .swatch.delete { background: #f4a6a6; }
.unchanged rect { fill: #ffffff; } .swatch.unchanged { background: #ffffff; }
.none rect { fill: #e6e8ec; } .swatch.none { background: #e6e8ec; }
.removed rect { stroke-dasharray: 4 3; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #4b5363; margin-right: 4px; vertical-align: -1px; }
.object { border-top: 1px solid #dde2ea; padding: 8px 0; }
.object .action { font-weight: 600; text-transform: uppercase; font-size: 11px; margin-right: 6px; }
pre { background: #f7f8fa; padding: 8px; overflow: auto; font-size: 12px; }
pre .add { color: #116329; } pre .del { color: #a40e26; }
"#;

const SCRIPT: &str = r#"
const plan = JSON.parse(document.getElementById('plan-data').textContent);
const byRule = {};
for (const c of plan.changes) { (byRule[c.rule] = byRule[c.rule] || []).push(c); }
const details = document.getElementById('details');
function text(tag, cls, s) { const e = document.createElement(tag); if (cls) e.className = cls; e.textContent = s; return e; }
function show(rule) {
  document.querySelectorAll('.rule.selected').forEach(g => g.classList.remove('selected'));
  const g = document.querySelector('.rule[data-rule="' + CSS.escape(rule) + '"]');
  if (g) g.classList.add('selected');
  details.replaceChildren(text('h2', '', rule));
  const changes = byRule[rule] || [];
  if (changes.length === 0) details.appendChild(text('p', '', 'No objects of its own (it feeds other rules).'));
  for (const c of changes) {
    const box = document.createElement('div'); box.className = 'object';
    box.appendChild(text('span', 'action ' + c.action, c.action));
    box.appendChild(text('span', '', c.group_kind + ' ' + (c.namespace ? c.namespace + '/' : '') + c.name));
    if (c.drifted_fields) box.appendChild(text('p', '', 'changed outside kiln: ' + c.drifted_fields.join(', ')));
    if (c.secret_values_changed) box.appendChild(text('p', '', 'secret values changed: ' + c.secret_values_changed.join(', ')));
    if (c.diff) {
      const pre = document.createElement('pre');
      for (const line of c.diff.split('\n')) {
        const cls = line.startsWith('+') && !line.startsWith('+++') ? 'add' : line.startsWith('-') && !line.startsWith('---') ? 'del' : '';
        pre.appendChild(text('span', cls, line + '\n'));
      }
      box.appendChild(pre);
    }
    details.appendChild(box);
  }
}
document.querySelectorAll('.rule').forEach(g => {
  g.addEventListener('click', () => show(g.dataset.rule));
  g.addEventListener('keydown', e => { if (e.key === 'Enter') show(g.dataset.rule); });
});
const first = document.querySelector('.rule:not(.unchanged):not(.none)');
if (first) show(first.dataset.rule);
"#;

/// The report page for a plan (`plan` as `--json` prints it) over a rule graph (as
/// `kiln graph --format json` prints it).
pub fn render_html(title: &str, graph: &Value, plan: &Value) -> String {
    let mut nodes = place(graph);
    let mut actions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in plan["changes"].as_array().into_iter().flatten() {
        if let (Some(rule), Some(action)) = (c["rule"].as_str(), c["action"].as_str()) {
            actions.entry(rule).or_default().push(action);
        }
    }
    // Rules the project no longer has, whose objects the plan deletes: a column of their own
    // after the graph, drawn dashed.
    let last = nodes.iter().map(|n| n.layer + 1).max().unwrap_or(0);
    let removed: Vec<&str> = actions
        .keys()
        .copied()
        .filter(|r| !nodes.iter().any(|n| n.name == *r))
        .collect();
    for (row, name) in removed.into_iter().enumerate() {
        nodes.push(Node {
            name,
            kind: "removed",
            deps: Vec::new(),
            layer: last,
            row,
        });
    }
    let states: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| {
            (
                n.name,
                state_of(actions.get(n.name).map(Vec::as_slice).unwrap_or(&[])),
            )
        })
        .collect();
    let count = |a: &str| plan["summary"][a].as_u64().unwrap_or(0);
    let mut counts = String::new();
    for (label, key) in [
        ("to create", "create"),
        ("to adopt", "adopt"),
        ("to update", "update"),
        ("drifted", "drift"),
        ("to delete", "delete"),
        ("unchanged", "unchanged"),
    ] {
        let _ = write!(
            counts,
            "<span class=\"count\" data-action=\"{key}\"><i class=\"swatch {key}\"></i><b>{}</b> {label}</span>",
            count(key)
        );
    }
    let data = script_data(&json!({"changes": plan["changes"]}));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head>\n<body>\n<header><h1>{title}</h1><div class=\"counts\" id=\"summary\">{counts}</div><p>{rules} rules; click one to see its objects and their diffs. ApplySet <code>{applyset}</code>.</p></header>\n<main><div id=\"graph\">{svg}</div><section id=\"details\"><p>Click a rule.</p></section></main>\n<script type=\"application/json\" id=\"plan-data\">{data}</script>\n<script>{SCRIPT}</script>\n</body></html>\n",
        title = escape(title),
        rules = nodes.len(),
        applyset = escape(plan["applyset"].as_str().unwrap_or_default()),
        svg = svg(&nodes, &states),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Value {
        json!({"nodes": [
            {"name": "ns", "kind": "manifest", "deps": []},
            {"name": "cfg", "kind": "configmap", "deps": ["ns"]},
            {"name": "tpl", "kind": "template", "deps": ["cfg"]},
            {"name": "api", "kind": "manifest", "deps": ["tpl", "ns"]},
        ]})
    }

    #[test]
    fn layers_follow_the_longest_dependency_path() {
        let g = graph();
        let nodes = place(&g);
        let layer = |n: &str| nodes.iter().find(|x| x.name == n).unwrap().layer;
        assert_eq!(
            (layer("ns"), layer("cfg"), layer("tpl"), layer("api")),
            (0, 1, 2, 3)
        );
    }

    #[test]
    fn script_data_holds_no_markup_and_reads_back_the_same() {
        let v = json!({"changes": [{"diff": "1 <!--<script> x", "name": "</script><!-- & -->"}]});
        let data = script_data(&v);
        for markup in ["<", ">", "&"] {
            assert!(!data.contains(markup), "{data}");
        }
        let back: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(back, v);
        let html = render_html(
            "t",
            &graph(),
            &json!({"applyset": "a", "summary": {"create": 1},
            "changes": [{"action": "create", "rule": "api", "group_kind": "ConfigMap",
                         "namespace": "shop", "name": "c", "diff": "1 <!--<script> x"}]}),
        );
        assert!(!html.contains("<!--"), "{html}");
        assert_eq!(html.matches("<script").count(), 2);
    }

    #[test]
    fn rules_take_their_worst_action_and_text_is_escaped() {
        let plan = json!({"applyset": "applyset-x", "summary": {"create": 1, "update": 1, "unchanged": 1},
        "changes": [
            {"action": "update", "rule": "api", "group_kind": "Deployment.apps", "namespace": "shop", "name": "api", "diff": "-a\n+b </script><b>"},
            {"action": "unchanged", "rule": "api", "group_kind": "Service", "namespace": "shop", "name": "api"},
            {"action": "create", "rule": "cfg", "group_kind": "ConfigMap", "namespace": "shop", "name": "c"},
        ]});
        let html = render_html("shop <staging>", &graph(), &plan);
        assert!(html.contains("data-rule=\"api\" data-state=\"update\""));
        assert!(html.contains("data-rule=\"cfg\" data-state=\"create\""));
        assert!(html.contains("data-rule=\"tpl\" data-state=\"none\""));
        assert!(html.contains("<title>shop &lt;staging&gt;</title>"));
        assert!(
            !html.contains("</script><b>"),
            "a diff cannot close the data script"
        );
        assert_eq!(html.matches("<script").count(), 2, "{html}");
        assert!(html.contains("data-action=\"update\"><i class=\"swatch update\"></i><b>1</b>"));
        // A rule that is gone, with objects to delete, still has a node.
        let plan = json!({"applyset": "a", "summary": {"delete": 1}, "changes": [
            {"action": "delete", "rule": "old", "group_kind": "ConfigMap", "namespace": "shop", "name": "o"}]});
        let html = render_html("t", &graph(), &plan);
        assert!(html.contains("class=\"rule delete removed\" data-rule=\"old\""));
    }
}
