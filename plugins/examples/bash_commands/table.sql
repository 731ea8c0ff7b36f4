-- Table filled by the bash_commands plugin: one row per Bash tool call.
-- plugins/build.sh copies it into the plugins dir as bash_commands.sql; the engine
-- applies every *.sql there on start (and when rows name a table it has not seen).
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
