-- A second control plane, unlike the example: other names (orgs/org_key, accounts/mail),
-- a four-level chain (orgs -> projects -> tasks -> task_notes), composite keys, a
-- self-reference (tasks.parent_task), a second reference from task_notes into tasks, a soft
-- reference (audit_trail.owner_ref), a WITHOUT ROWID table, a table keyed by rowid only, and
-- two tables nothing reaches (usage_events by its column name, webhook_deliveries only by
-- the values it holds).
CREATE TABLE orgs (
  org_key TEXT PRIMARY KEY,
  name    TEXT NOT NULL,
  slug    TEXT NOT NULL UNIQUE
);
CREATE TABLE accounts (
  acct_id INTEGER PRIMARY KEY,
  mail    TEXT NOT NULL UNIQUE,
  big     INTEGER
);
CREATE TABLE memberships (
  acct_id INTEGER NOT NULL REFERENCES accounts (acct_id),
  org_key TEXT NOT NULL REFERENCES orgs (org_key),
  role    TEXT,
  PRIMARY KEY (acct_id, org_key)
);
CREATE TABLE projects (
  org_key TEXT NOT NULL REFERENCES orgs (org_key),
  proj_no INTEGER NOT NULL,
  title   TEXT,
  PRIMARY KEY (org_key, proj_no)
);
CREATE TABLE tasks (
  task_id     INTEGER PRIMARY KEY,
  org_key     TEXT NOT NULL,
  proj_no     INTEGER NOT NULL,
  parent_task INTEGER REFERENCES tasks (task_id),
  payload     BLOB,
  weight      REAL,
  FOREIGN KEY (org_key, proj_no) REFERENCES projects (org_key, proj_no)
);
CREATE TABLE task_notes (
  note_id   INTEGER PRIMARY KEY,
  task_id   INTEGER NOT NULL REFERENCES tasks (task_id),
  ref_task  INTEGER REFERENCES tasks (task_id),
  body      TEXT,
  snowflake INTEGER
);
CREATE TABLE org_settings (
  org_key TEXT PRIMARY KEY REFERENCES orgs (org_key),
  data    BLOB
) WITHOUT ROWID;
CREATE TABLE notes_log (
  org_key TEXT NOT NULL REFERENCES orgs (org_key),
  line    TEXT
);
CREATE TABLE site_map (
  org_key TEXT PRIMARY KEY REFERENCES orgs (org_key),
  site    TEXT NOT NULL,
  node    TEXT NOT NULL,
  slug    TEXT NOT NULL
);
CREATE TABLE billing (
  org_key         TEXT PRIMARY KEY REFERENCES orgs (org_key),
  stripe_customer TEXT
);
CREATE TABLE audit_trail (
  id        INTEGER PRIMARY KEY,
  owner_ref TEXT NOT NULL,
  what      TEXT
);
CREATE TABLE usage_events (
  id      INTEGER PRIMARY KEY,
  org_key TEXT,
  units   INTEGER
);
CREATE TABLE webhook_deliveries (
  id     INTEGER PRIMARY KEY,
  target TEXT,
  body   TEXT
);
