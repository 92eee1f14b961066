-- Test orgs: qa-alpha (clean), qa-beta (shares rows with production), qa-gamma (a real user
-- is a member). Production: acme. Rowids are set apart from insertion order, so a restore
-- that does not keep them shows in a dump.
INSERT INTO orgs (rowid, org_key, name, slug) VALUES
  (5, 'acme', 'Acme Ltd', 'acme'),
  (9, 'qa-alpha', 'QA Alpha', 'alpha'),
  (3, 'qa-beta', 'QA Beta', 'beta'),
  (12, 'qa-gamma', 'QA Gamma', 'gamma'),
  (14, 'qa-alpha-2', 'QA Alpha Two', 'alpha2');
INSERT INTO accounts (acct_id, mail, big) VALUES
  (1, 'qa1@example.test', 9223372036854775807),
  (2, 'qa2@example.test', -9223372036854775808),
  (3, 'ceo@real.example', 9007199254740993),
  (4, 'ops@real.example', NULL),
  (5, 'qa5@example.test', 1);
INSERT INTO memberships (rowid, acct_id, org_key, role) VALUES
  (21, 1, 'qa-alpha', 'owner'),
  (7, 2, 'qa-alpha', 'member'),
  (30, 2, 'qa-beta', 'owner'),
  (2, 3, 'acme', 'owner'),
  (11, 4, 'acme', 'admin'),
  (40, 5, 'qa-gamma', 'owner'),
  (41, 3, 'qa-gamma', 'member');
INSERT INTO projects (rowid, org_key, proj_no, title) VALUES
  (8, 'qa-alpha', 1, 'alpha one'),
  (6, 'qa-alpha', 2, 'alpha two'),
  (33, 'qa-beta', 1, 'beta one'),
  (1, 'acme', 1, 'acme roadmap'),
  (50, 'qa-gamma', 1, 'gamma one');
INSERT INTO tasks (task_id, org_key, proj_no, parent_task, payload, weight) VALUES
  (10, 'qa-alpha', 1, NULL, X'00ff10', 2.0),
  (11, 'qa-alpha', 1, 10, X'', 0.1),
  (14, 'qa-alpha', 2, NULL, NULL, NULL),
  (20, 'acme', 1, NULL, X'deadbeef', 1.5),
  (21, 'acme', 1, 20, NULL, NULL),
  (12, 'qa-beta', 1, NULL, NULL, NULL),
  (13, 'qa-beta', 1, 21, NULL, NULL),
  (22, 'acme', 1, 12, NULL, NULL),
  (30, 'qa-gamma', 1, NULL, NULL, NULL);
INSERT INTO task_notes (note_id, task_id, ref_task, body, snowflake) VALUES
  (100, 10, NULL, 'first', 1152921504606846977),
  (101, 11, 10, 'sub', -4611686018427387905),
  (102, 14, NULL, 'ünïcödé', 0),
  (103, 20, NULL, 'acme secret', 9223372036854775806),
  (104, 12, 20, 'points at acme', NULL),
  (105, 30, NULL, 'gamma', NULL);
INSERT INTO org_settings (org_key, data) VALUES
  ('qa-alpha', X'0102'),
  ('acme', X'ffee'),
  ('qa-gamma', X'');
INSERT INTO notes_log (rowid, org_key, line) VALUES
  (77, 'qa-alpha', 'created'),
  (3, 'acme', 'created'),
  (78, 'qa-alpha', 'renamed');
INSERT INTO site_map (rowid, org_key, site, node, slug) VALUES
  (4, 'qa-alpha', 'alpha.erp.example.test', 'node1.internal', 'alpha'),
  (2, 'acme', 'acme.prod.example.com', 'node1.internal', 'acme');
INSERT INTO billing (rowid, org_key, stripe_customer) VALUES
  (9, 'qa-alpha', 'cus_alpha'),
  (1, 'acme', 'cus_acme');
INSERT INTO audit_trail (id, owner_ref, what) VALUES
  (1, 'qa-alpha', 'login'),
  (2, 'acme', 'login'),
  (3, 'system', 'boot');
INSERT INTO usage_events (id, org_key, units) VALUES
  (1, 'qa-alpha', 5),
  (2, 'acme', 7);
INSERT INTO webhook_deliveries (id, target, body) VALUES
  (1, 'qa-alpha', '{}'),
  (2, 'acme', '{}');
