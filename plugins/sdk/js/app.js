// {{name}}: a claude-ingest classifier plugin (WIT world `classifier`).
//
// The engine calls `classify` for every entry a rule sends to this plugin
// (`plugins: [{plugin: {{name}}}]` in a rules file). `entry.json` is the whole
// Claude Code log line as JSON text; the other fields are typed shortcuts.
// Return labels, variables (`$name` in later rules) and whether to drop the
// entry; throw a string to dead-letter it. No files, network or clock.

export function classify(entry) {
  let doc;
  try {
    doc = JSON.parse(entry.json);
  } catch (e) {
    throw `entry is not JSON: ${e}`;
  }
  const labels = [`{{name}}:${entry.kind}`];
  const content = (doc.message || {}).content;
  const blocks = Array.isArray(content) ? content : [];
  if (typeof content === "string" && entry.kind === "user") {
    labels.push("{{name}}:prompt");
  }
  for (const block of blocks) {
    if (block && block.type === "tool_use") {
      labels.push(`{{name}}:tool:${block.name}`);
    }
  }
  return {
    labels,
    set: [["{{name}}_blocks", { tag: "integer", val: BigInt(blocks.length) }]],
    drop: false,
  };
}
