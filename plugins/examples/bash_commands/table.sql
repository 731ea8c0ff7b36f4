-- Table filled by the bash_commands plugin: one row per Bash tool call.
-- Add this directory to `schema_dirs` in the config so the engine creates it.
CREATE TABLE IF NOT EXISTS plugin_bash_commands
(
    session_id  String,
    uuid        String,
    timestamp   DateTime64(3, 'UTC'),
    tool_use_id String,
    command     String,
    program     LowCardinality(String),
    dangerous   UInt8
)
ENGINE = ReplacingMergeTree
ORDER BY (session_id, tool_use_id);
