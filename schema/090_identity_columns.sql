-- The identity columns the API filters by (`user=` / `host=`, token scopes).
-- The tables' own DDL creates them (filled by the sink from config `identity`);
-- these statements only add them to a database created before they existed
-- (no-ops otherwise), so the API's queries work on any database.
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
