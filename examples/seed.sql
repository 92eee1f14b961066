-- Example Control Plane data for examples/controlplane.sql.
--
-- Test targets (inside the allowlists of examples/resetctl.yaml):
--   qa1@example.test              owns t_test_qa1a and t_test_qa1b
--   qa2@example.test              member of t_test_qa1b, owns t_test_qa2: keeps a tenant when
--                                 qa1 is reset, so the orphan-user step must keep this user
--   viewer+test@partner.example   member of t_test_qa1a only: an orphan once qa1 is reset
--   trial7@example.test           e-mail-only trial: trial_signups and otps, no user, no tenant
-- Production (must never be touched; blocked by the guards and the agent's protected glob):
--   owner@realcustomer.example    owns t_prod_acme on acme.prod.example.com
--   books@realcustomer.example    member of t_prod_acme
--   prospect@realcustomer.example a pending trial signup
--
-- Every tenant has rows in every tenant table. Values cover the awkward cases: integers
-- beyond 2^53, blobs (and one empty blob), NULLs, text that looks like a number, reals with
-- no fraction and non-ASCII text.

INSERT INTO tenants_master (tenant_id, name, subdomain, status, plan_code, created_at) VALUES
  ('t_test_qa1a', 'QA1 Alpha (test)', 'qa1a', 'trial', 'starter', '2025-03-01 09:00:00'),
  ('t_test_qa1b', 'QA1 Beta (test)', 'qa1b', 'active', 'growth', '2025-03-02 09:30:00'),
  ('t_test_qa2', 'QA2 테스트', 'qa2', 'trial', NULL, '2025-03-05 14:00:00'),
  ('t_prod_acme', 'Acme Manufacturing Ltd', 'acme', 'active', 'enterprise', '2024-06-11 08:15:00');

INSERT INTO tenant_runtime (tenant_id, site_name, host, subdomain, frappe_version, db_name, provisioned_at) VALUES
  ('t_test_qa1a', 'qa1a.erp.example.test', 'node1.internal', 'qa1a', 'v15.40.1', '_5f1c0a9e2b7d4c31', '2025-03-01T09:04:12Z'),
  ('t_test_qa1b', 'qa1b.erp.example.test', 'node1.internal', 'qa1b', 'v15.40.1', '_8a2e41d07c6b9f55', '2025-03-02T09:33:40Z'),
  ('t_test_qa2', 'qa2.erp.example.test', 'node1.internal', 'qa2', NULL, '_c3b9e8f1a0d2476e', NULL),
  ('t_prod_acme', 'acme.prod.example.com', 'node1.internal', 'acme', 'v15.38.0', '_0d7e6f5a4b3c2a19', '2024-06-11T08:20:03Z');

INSERT INTO users (id, email, display_name, external_id, created_at, last_login_at) VALUES
  (1, 'qa1@example.test', 'QA One', 1152921504606846977, '2025-03-01T08:58:00Z', '2025-04-02T10:11:12Z'),
  (2, 'qa2@example.test', 'QA Two', 9007199254740993, '2025-03-02T10:00:00Z', NULL),
  (3, 'viewer+test@partner.example', NULL, NULL, '2025-03-03T12:00:00Z', NULL),
  (4, 'owner@realcustomer.example', 'Dana Owner', 9223372036854775807, '2024-06-11T08:10:00Z', '2025-04-01T07:00:00Z'),
  (5, 'books@realcustomer.example', 'Sam Books', -9223372036854775808, '2024-07-01T09:00:00Z', '2025-03-28T16:45:00Z');

INSERT INTO sessions (id, user_id, token_hash, user_agent, created_at, expires_at) VALUES
  ('sess_qa1_laptop', 1, X'9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', 'Mozilla/5.0 (X11; Linux x86_64)', '2025-04-02T10:11:12Z', '2025-05-02T10:11:12Z'),
  ('sess_qa1_phone', 1, X'00ff00fe80818283c0c1f5f6f7f8fffe0000000000000000000000000000ffff', NULL, '2025-04-01T18:00:00Z', '2025-05-01T18:00:00Z'),
  ('sess_qa2', 2, X'60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752', 'curl/8.5.0', '2025-03-20T09:00:00Z', '2025-04-20T09:00:00Z'),
  ('sess_viewer', 3, X'fd61a03af4f77d870fc21e05e7e80678095c92d808cfb3b5c279ee04c74aca13', 'Mozilla/5.0 (Macintosh)', '2025-03-21T09:00:00Z', '2025-04-21T09:00:00Z'),
  ('sess_owner', 4, X'a591a6d40bf420404a011733cfb7b190d62c65bf0bcda32b57b277d9ad9f146e', 'Mozilla/5.0 (Windows NT 10.0)', '2025-04-01T07:00:00Z', '2025-05-01T07:00:00Z');

INSERT INTO otps (id, email, user_id, purpose, code_hash, created_at, expires_at, consumed_at) VALUES
  (1, 'qa1@example.test', NULL, 'signup', X'1111111111111111111111111111111111111111111111111111111111111111', '2025-03-01T08:55:00Z', '2025-03-01T09:05:00Z', '2025-03-01T08:56:30Z'),
  (2, 'qa1@example.test', 1, 'login', X'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', '2025-04-02T10:10:00Z', '2025-04-02T10:20:00Z', '2025-04-02T10:11:00Z'),
  (3, 'qa1@example.test', 1, 'passcode_reset', X'', '2025-04-03T11:00:00Z', '2025-04-03T11:10:00Z', NULL),
  (4, 'trial7@example.test', NULL, 'signup', X'2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae', '2025-04-05T15:00:00Z', '2025-04-05T15:10:00Z', NULL),
  (5, 'trial7@example.test', NULL, 'signup', X'fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9', '2025-04-05T15:12:00Z', '2025-04-05T15:22:00Z', '2025-04-05T15:13:05Z'),
  (6, 'qa2@example.test', 2, 'login', X'baa5a0964d3320fbc0c6a922140453c8513ea24ab8fd0577034804a967248096', '2025-03-20T08:59:00Z', '2025-03-20T09:09:00Z', '2025-03-20T09:00:00Z'),
  (7, 'owner@realcustomer.example', 4, 'login', X'9c56cc51b374c3ba189210d5b6d4bf57790d351c96c47c02190ecf1e430635ab', '2025-04-01T06:59:00Z', '2025-04-01T07:09:00Z', '2025-04-01T07:00:00Z');

INSERT INTO user_tenants (user_id, tenant_id, role, invited_at) VALUES
  (1, 't_test_qa1a', 'owner', NULL),
  (1, 't_test_qa1b', 'owner', NULL),
  (2, 't_test_qa1b', 'member', '2025-03-02T10:00:00Z'),
  (2, 't_test_qa2', 'owner', NULL),
  (3, 't_test_qa1a', 'member', '2025-03-03T12:00:00Z'),
  (4, 't_prod_acme', 'owner', NULL),
  (5, 't_prod_acme', 'admin', '2024-07-01T09:00:00Z');

INSERT INTO trial_signups (id, email, company, source, status, created_at) VALUES
  (1, 'qa1@example.test', 'QA1 Alpha (test)', 'www', 'provisioned', '2025-03-01T08:54:00Z'),
  (2, 'trial7@example.test', 'Trial Seven (test)', 'www', 'verified', '2025-04-05T14:59:00Z'),
  (3, 'trial7@example.test', NULL, 'www-retry', 'pending', '2025-04-05T15:11:00Z'),
  (4, 'prospect@realcustomer.example', 'Acme Subsidiary GmbH', 'sales', 'pending', '2025-04-06T10:00:00Z');

INSERT INTO contracts (id, tenant_id, contract_no, seats, starts_on, ends_on) VALUES
  (1, 't_test_qa1a', '00123', 5, '2025-03-01', NULL),
  (2, 't_test_qa1b', '00124', 10, '2025-03-02', '2026-03-01'),
  (3, 't_test_qa2', '0042', 3, '2025-03-05', NULL),
  (4, 't_prod_acme', '00987', 120, '2024-07-01', '2027-06-30'),
  (5, 't_prod_acme', '1e3', 20, '2025-01-01', NULL);

INSERT INTO allocations (id, contract_id, resource, quantity) VALUES
  (1, 1, 'seats', 5),
  (2, 1, 'storage_gb', 10),
  (3, 2, 'seats', 10),
  (4, 3, 'seats', 3),
  (5, 4, 'seats', 120),
  (6, 5, 'api_calls', 1000000);

INSERT INTO allocation_items (id, allocation_id, sku, unit_price, note) VALUES
  (1, 1, 'SEAT-STARTER', 12.5, NULL),
  (2, 2, 'STORAGE-10', 2.0, 'integral REAL: must stay REAL'),
  (3, 3, 'SEAT-GROWTH', 19.99, NULL),
  (4, 4, 'SEAT-STARTER', 0.0, 'free trial'),
  (5, 5, 'SEAT-ENT', 29.0, NULL),
  (6, 6, 'API-1M', 0.000125, NULL);

INSERT INTO billing_accounts (id, tenant_id, stripe_customer_id, billing_email, currency) VALUES
  (1, 't_test_qa1a', 'cus_test_qa1a', 'qa1@example.test', 'usd'),
  (2, 't_test_qa1b', 'cus_test_qa1b', 'qa1@example.test', 'eur'),
  (3, 't_test_qa2', 'cus_test_qa2', NULL, 'usd'),
  (4, 't_prod_acme', 'cus_prod_acme', 'billing@realcustomer.example', 'usd');

INSERT INTO billing_subscriptions (id, billing_account_id, stripe_subscription_id, status, current_period_end) VALUES
  (1, 1, 'sub_test_qa1a', 'trialing', 1746057600),
  (2, 2, 'sub_test_qa1b', 'active', 1746144000),
  (3, 3, 'sub_test_qa2', 'canceled', NULL),
  (4, 4, 'sub_prod_acme', 'active', 1748736000);

INSERT INTO billing_invoices (id, subscription_id, stripe_invoice_id, amount_due, currency, status, paid_at) VALUES
  (1, 1, 'in_test_qa1a_0001', 0, 'usd', 'paid', '2025-03-01T09:10:00Z'),
  (2, 2, 'in_test_qa1b_0001', 19990, 'eur', 'open', NULL),
  (3, 3, 'in_test_qa2_0001', 0, 'usd', 'void', NULL),
  (4, 4, 'in_prod_acme_0001', 348000, 'usd', 'paid', '2025-01-01T00:05:00Z'),
  (5, 4, 'in_prod_acme_0002', 348000, 'usd', 'paid', '2025-02-01T00:05:00Z');

INSERT INTO jobs (id, tenant_id, kind, schedule, payload, enabled) VALUES
  (1, 't_test_qa1a', 'backup', '0 3 * * *', '{"keep":7}', 1),
  (2, 't_test_qa1a', 'sync_users', NULL, NULL, 0),
  (3, 't_test_qa1b', 'backup', '0 4 * * *', '{"keep":7}', 1),
  (4, 't_test_qa2', 'backup', '0 5 * * *', '{"keep":3}', 1),
  (5, 't_prod_acme', 'backup', '0 2 * * *', '{"keep":30}', 1);

INSERT INTO job_runs (id, job_id, status, started_at, finished_at, error) VALUES
  (1, 1, 'succeeded', '2025-04-01T03:00:00Z', '2025-04-01T03:02:10Z', NULL),
  (2, 1, 'failed', '2025-04-02T03:00:00Z', '2025-04-02T03:00:04Z', 'bench: site qa1a.erp.example.test is locked'),
  (3, 2, 'succeeded', '2025-03-05T12:00:00Z', '2025-03-05T12:00:01Z', NULL),
  (4, 3, 'running', '2025-04-02T04:00:00Z', NULL, NULL),
  (5, 4, 'succeeded', '2025-04-01T05:00:00Z', '2025-04-01T05:01:00Z', NULL),
  (6, 5, 'succeeded', '2025-04-02T02:00:00Z', '2025-04-02T02:21:37Z', NULL);

-- tenant_ref is a soft reference: no foreign key; 'system' belongs to no tenant.
INSERT INTO traces (id, tenant_ref, trace_id, span_id, name, duration_ms, attributes, recorded_at) VALUES
  (1, 't_test_qa1a', '4bf92f3577b34da6a3ce929d0e0e4736', 9007199254740993, 'GET /api/resource/Item', 42.0, '{"status":200}', '2025-04-02T10:12:00Z'),
  (2, 't_test_qa1a', '4bf92f3577b34da6a3ce929d0e0e4736', 9223372036854775807, 'frappe.get_list', 17.25, NULL, '2025-04-02T10:12:00Z'),
  (3, 't_test_qa1b', '0af7651916cd43dd8448eb211c80319c', -4611686018427387905, 'POST /api/method/login', 120.5, '{"status":200}', '2025-04-02T11:00:00Z'),
  (4, 't_test_qa2', '5c8d2c1e0b9a4f3e8d7c6b5a49382716', 1234, 'GET /app', NULL, NULL, '2025-03-20T09:01:00Z'),
  (5, 't_prod_acme', 'a1b2c3d4e5f60718293a4b5c6d7e8f90', 9007199254740995, 'GET /app/sales-invoice', 88.0, '{"status":200}', '2025-04-01T07:01:00Z'),
  (6, 'system', 'ffeeddccbbaa99887766554433221100', 18014398509481984, 'cron.rotate_logs', 5.5, NULL, '2025-04-02T00:00:00Z');

INSERT INTO deletion_requests (id, tenant_id, requested_by, requested_at, purge_after, status) VALUES
  (1, 't_test_qa1a', 'qa1@example.test', '2025-04-03T12:00:00Z', '2025-05-03T12:00:00Z', 'pending'),
  (2, 't_test_qa1b', 'qa1@example.test', '2025-03-10T12:00:00Z', '2025-04-09T12:00:00Z', 'cancelled'),
  (3, 't_test_qa2', 'qa2@example.test', '2025-04-04T08:00:00Z', '2025-05-04T08:00:00Z', 'pending'),
  (4, 't_prod_acme', 'owner@realcustomer.example', '2025-02-01T10:00:00Z', '2025-03-03T10:00:00Z', 'cancelled');

-- Kept for tax and accounting after any reset (spec.ignore).
INSERT INTO accounting_ledger (id, tenant_id, entry_type, amount_cents, currency, stripe_invoice_id, booked_at) VALUES
  (1, 't_test_qa1a', 'invoice', 0, 'usd', 'in_test_qa1a_0001', '2025-03-01T09:10:00Z'),
  (2, 't_test_qa1b', 'invoice', 19990, 'eur', 'in_test_qa1b_0001', '2025-04-01T00:00:00Z'),
  (3, 't_test_qa2', 'invoice', 0, 'usd', 'in_test_qa2_0001', '2025-03-05T14:00:00Z'),
  (4, 't_prod_acme', 'invoice', 348000, 'usd', 'in_prod_acme_0001', '2025-01-01T00:05:00Z'),
  (5, 't_prod_acme', 'invoice', 348000, 'usd', 'in_prod_acme_0002', '2025-02-01T00:05:00Z'),
  (6, 't_prod_acme', 'refund', -12000, 'usd', NULL, '2025-02-15T10:00:00Z');
