-- A representative Control Plane D1 schema (D1 is SQLite), modelled on the tables the
-- production test-data reset runbook names. resetctl learns everything but the roots from
-- this schema: tables from sqlite_master, edges from PRAGMA foreign_key_list.
--
-- Foreign keys are enforced (D1 always does; the embedded backend opens with
-- PRAGMA foreign_keys=ON) and use the default ON DELETE NO ACTION: nothing cascades, so a
-- reset must delete children before parents, as 03-delete-tenant-data.sql does.
--
-- One statement per `;` at the end of a line; no triggers.

-- Tenants -------------------------------------------------------------------------------

-- The tenant root. created_at is declared DATETIME as many D1 schemas do; its values stay TEXT.
CREATE TABLE tenants_master (
  tenant_id  TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  subdomain  TEXT NOT NULL UNIQUE,
  status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('trial', 'active', 'suspended', 'pending_deletion')),
  plan_code  TEXT,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Where a tenant's Frappe site runs: the node (host) and the bench site name.
CREATE TABLE tenant_runtime (
  tenant_id      TEXT PRIMARY KEY REFERENCES tenants_master (tenant_id),
  site_name      TEXT NOT NULL UNIQUE,
  host           TEXT NOT NULL,
  subdomain      TEXT NOT NULL UNIQUE,
  frappe_version TEXT,
  db_name        TEXT,
  provisioned_at TEXT
);

-- Users and authentication --------------------------------------------------------------

-- email is stored normalised (trimmed, lower case). external_id is an identity-provider
-- snowflake: 64-bit, beyond JavaScript's 2^53.
CREATE TABLE users (
  id            INTEGER PRIMARY KEY,
  email         TEXT NOT NULL UNIQUE CHECK (email = lower(trim(email))),
  display_name  TEXT,
  external_id   INTEGER,
  created_at    TEXT NOT NULL,
  last_login_at TEXT
);

CREATE TABLE sessions (
  id         TEXT PRIMARY KEY,
  user_id    INTEGER NOT NULL REFERENCES users (id),
  token_hash BLOB NOT NULL,
  user_agent TEXT,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- One-time passcodes. Sent by e-mail before a users row exists (trial signups), so keyed by
-- e-mail; user_id is filled in once the user exists.
CREATE TABLE otps (
  id          INTEGER PRIMARY KEY,
  email       TEXT NOT NULL CHECK (email = lower(trim(email))),
  user_id     INTEGER REFERENCES users (id),
  purpose     TEXT NOT NULL CHECK (purpose IN ('signup', 'login', 'passcode_reset')),
  code_hash   BLOB NOT NULL,
  created_at  TEXT NOT NULL,
  expires_at  TEXT NOT NULL,
  consumed_at TEXT
);
CREATE INDEX otps_email ON otps (email);
CREATE INDEX otps_user_id ON otps (user_id);

-- Membership: which users reach which tenants.
CREATE TABLE user_tenants (
  user_id    INTEGER NOT NULL REFERENCES users (id),
  tenant_id  TEXT NOT NULL REFERENCES tenants_master (tenant_id),
  role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  invited_at TEXT,
  PRIMARY KEY (user_id, tenant_id)
);
CREATE INDEX user_tenants_tenant_id ON user_tenants (tenant_id);

-- Trial signups from www, keyed by e-mail only: no user, no tenant yet.
CREATE TABLE trial_signups (
  id         INTEGER PRIMARY KEY,
  email      TEXT NOT NULL CHECK (email = lower(trim(email))),
  company    TEXT,
  source     TEXT,
  status     TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verified', 'provisioned', 'abandoned')),
  created_at TEXT NOT NULL
);
CREATE INDEX trial_signups_email ON trial_signups (email);

-- Contracts and allocations: four levels deep from the tenant root ---------------------

-- contract_no is text that looks like a number ("00123"): it must stay text.
CREATE TABLE contracts (
  id          INTEGER PRIMARY KEY,
  tenant_id   TEXT NOT NULL REFERENCES tenants_master (tenant_id),
  contract_no TEXT NOT NULL,
  seats       INTEGER NOT NULL,
  starts_on   TEXT NOT NULL,
  ends_on     TEXT
);
CREATE INDEX contracts_tenant_id ON contracts (tenant_id);

CREATE TABLE allocations (
  id          INTEGER PRIMARY KEY,
  contract_id INTEGER NOT NULL REFERENCES contracts (id),
  resource    TEXT NOT NULL,
  quantity    INTEGER NOT NULL
);
CREATE INDEX allocations_contract_id ON allocations (contract_id);

CREATE TABLE allocation_items (
  id            INTEGER PRIMARY KEY,
  allocation_id INTEGER NOT NULL REFERENCES allocations (id),
  sku           TEXT NOT NULL,
  unit_price    REAL NOT NULL,
  note          TEXT
);
CREATE INDEX allocation_items_allocation_id ON allocation_items (allocation_id);

-- Billing (Stripe ids live here) --------------------------------------------------------

CREATE TABLE billing_accounts (
  id                 INTEGER PRIMARY KEY,
  tenant_id          TEXT NOT NULL UNIQUE REFERENCES tenants_master (tenant_id),
  stripe_customer_id TEXT UNIQUE,
  billing_email      TEXT,
  currency           TEXT NOT NULL DEFAULT 'usd'
);

CREATE TABLE billing_subscriptions (
  id                     INTEGER PRIMARY KEY,
  billing_account_id     INTEGER NOT NULL REFERENCES billing_accounts (id),
  stripe_subscription_id TEXT UNIQUE,
  status                 TEXT NOT NULL,
  current_period_end     INTEGER
);
CREATE INDEX billing_subscriptions_account ON billing_subscriptions (billing_account_id);

CREATE TABLE billing_invoices (
  id                INTEGER PRIMARY KEY,
  subscription_id   INTEGER NOT NULL REFERENCES billing_subscriptions (id),
  stripe_invoice_id TEXT UNIQUE,
  amount_due        INTEGER NOT NULL,
  currency          TEXT NOT NULL,
  status            TEXT NOT NULL,
  paid_at           TEXT
);
CREATE INDEX billing_invoices_subscription ON billing_invoices (subscription_id);

-- Jobs ----------------------------------------------------------------------------------

CREATE TABLE jobs (
  id        INTEGER PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants_master (tenant_id),
  kind      TEXT NOT NULL,
  schedule  TEXT,
  payload   TEXT,
  enabled   INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX jobs_tenant_id ON jobs (tenant_id);

CREATE TABLE job_runs (
  id          INTEGER PRIMARY KEY,
  job_id      INTEGER NOT NULL REFERENCES jobs (id),
  status      TEXT NOT NULL,
  started_at  TEXT NOT NULL,
  finished_at TEXT,
  error       TEXT
);
CREATE INDEX job_runs_job_id ON job_runs (job_id);

-- Traces: tenant_ref points at tenants_master.tenant_id WITHOUT a foreign key (written by
-- the edge before the tenant row may exist, and 'system' for platform spans): a soft
-- reference the spec declares. span_id is a 64-bit id, mostly beyond 2^53.
CREATE TABLE traces (
  id          INTEGER PRIMARY KEY,
  tenant_ref  TEXT NOT NULL,
  trace_id    TEXT NOT NULL,
  span_id     INTEGER NOT NULL,
  name        TEXT NOT NULL,
  duration_ms REAL,
  attributes  TEXT,
  recorded_at TEXT NOT NULL
);
CREATE INDEX traces_tenant_ref ON traces (tenant_ref);

-- The staged deletion queue of deletion-policy.ts: purge after 30 days.
CREATE TABLE deletion_requests (
  id           INTEGER PRIMARY KEY,
  tenant_id    TEXT NOT NULL REFERENCES tenants_master (tenant_id),
  requested_by TEXT NOT NULL,
  requested_at TEXT NOT NULL,
  purge_after  TEXT NOT NULL,
  status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'cancelled', 'purged'))
);
CREATE INDEX deletion_requests_tenant_id ON deletion_requests (tenant_id);

-- Accounting ledger: kept for tax reasons after a tenant is gone (runbook step 6), so
-- tenant_id has no foreign key and the reset spec lists the table under ignore.
CREATE TABLE accounting_ledger (
  id                INTEGER PRIMARY KEY,
  tenant_id         TEXT NOT NULL,
  entry_type        TEXT NOT NULL,
  amount_cents      INTEGER NOT NULL,
  currency          TEXT NOT NULL,
  stripe_invoice_id TEXT,
  booked_at         TEXT NOT NULL
);
CREATE INDEX accounting_ledger_tenant_id ON accounting_ledger (tenant_id);
