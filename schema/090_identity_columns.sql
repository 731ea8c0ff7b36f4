-- The identity columns the API filters by (`user=` / `host=`, token scopes).
-- They are added here so the API's queries work on any database; the sink
-- does not fill them yet (stamping rows with config `identity` is pending),
-- so today they hold empty strings.
ALTER TABLE claude_messages ADD COLUMN IF NOT EXISTS host LowCardinality(String);
ALTER TABLE claude_messages ADD COLUMN IF NOT EXISTS user_name LowCardinality(String);
ALTER TABLE claude_tool_usage ADD COLUMN IF NOT EXISTS host LowCardinality(String);
ALTER TABLE claude_tool_usage ADD COLUMN IF NOT EXISTS user_name LowCardinality(String);
ALTER TABLE claude_file_access ADD COLUMN IF NOT EXISTS host LowCardinality(String);
ALTER TABLE claude_file_access ADD COLUMN IF NOT EXISTS user_name LowCardinality(String);
ALTER TABLE claude_requests ADD COLUMN IF NOT EXISTS host LowCardinality(String);
ALTER TABLE claude_requests ADD COLUMN IF NOT EXISTS user_name LowCardinality(String);
ALTER TABLE claude_sessions ADD COLUMN IF NOT EXISTS host LowCardinality(String);
ALTER TABLE claude_sessions ADD COLUMN IF NOT EXISTS user_name LowCardinality(String);
ALTER TABLE claude_summaries ADD COLUMN IF NOT EXISTS host LowCardinality(String);
ALTER TABLE claude_summaries ADD COLUMN IF NOT EXISTS user_name LowCardinality(String);
ALTER TABLE claude_dead_letters ADD COLUMN IF NOT EXISTS host LowCardinality(String);
ALTER TABLE claude_dead_letters ADD COLUMN IF NOT EXISTS user_name LowCardinality(String);
ALTER TABLE claude_daily_activity ADD COLUMN IF NOT EXISTS host LowCardinality(String);
ALTER TABLE claude_daily_activity ADD COLUMN IF NOT EXISTS user_name LowCardinality(String);
