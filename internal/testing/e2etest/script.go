package e2etest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/internal/testing/agenttest"
)

// deploymentKey is where ScriptSetup keeps the deployment in a script's Values.
type deploymentKey struct{}

// ScriptSetup is a testscript Setup starting a deployment (Start with o, Dir being the
// script's work folder) and stopping it when the script ends. The script sees alice.yaml
// and bob.yaml in $WORK, alice's state in $WORK/state, each node's folder in
// $WORK/nodes/HOST, and the environment the operators need (STRIPE_API_KEY, ...).
func ScriptSetup(o Options) func(*testscript.Env) error {
	return func(env *testscript.Env) error {
		o := o
		o.Dir = env.WorkDir
		d, err := Start(context.Background(), o)
		if err != nil {
			return err
		}
		env.Defer(func() {
			if err := d.Close(); err != nil {
				env.T().Log(err)
			}
		})
		for _, kv := range d.Env {
			k, v, _ := strings.Cut(kv, "=")
			env.Setenv(k, v)
		}
		env.Values[deploymentKey{}] = d
		return nil
	}
}

// ScriptCommands are the commands a script uses to check outcomes, not just exit codes:
//
//	snapshot save NAME      everything the reset touches, exactly (see Snapshot)
//	snapshot same NAME      fails naming each difference unless all is as saved; with ! the reverse
//	site gone SITE[@HOST]   the site's database, user-visible tables and folder are gone from the node
//	site present SITE[@HOST]
//	d1 SQL [ARG...]         runs a query on D1 and prints its rows, columns joined by |
//	kv NAMESPACE KEY        prints a KV value; fails when the key is missing (! for gone)
//	stripe deleted ID       succeeds when the Stripe customer is deleted (! for still there)
//	getrun VAR              sets VAR to the run id the previous command printed ("run ID ...")
func ScriptCommands() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"snapshot": cmdSnapshot,
		"site":     cmdSite,
		"d1":       cmdD1,
		"kv":       cmdKV,
		"stripe":   cmdStripe,
		"getrun":   cmdGetRun,
	}
}

func deployment(ts *testscript.TestScript) *Deployment {
	d, ok := ts.Value(deploymentKey{}).(*Deployment)
	if !ok {
		ts.Fatalf("no deployment: use e2etest.ScriptSetup")
	}
	return d
}

type snapshotKey string

func cmdSnapshot(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || (args[0] != "save" && args[0] != "same") {
		ts.Fatalf("usage: snapshot save|same NAME")
	}
	d := deployment(ts)
	s, err := d.Snapshot(context.Background())
	ts.Check(err)
	saved := snapshots(ts)
	switch args[0] {
	case "save":
		if neg {
			ts.Fatalf("unsupported: ! snapshot save")
		}
		saved[args[1]] = s
		fmt.Fprintf(ts.Stdout(), "snapshot %s: %d D1 tables, %d rows, %d KV keys, %d sites\n", args[1], len(s.D1), rowCount(s), len(s.KV), len(s.Sites))
	case "same":
		old, ok := saved[args[1]]
		if !ok {
			ts.Fatalf("no snapshot %s saved", args[1])
		}
		diff := Diff(old, s)
		switch {
		case diff != "" && !neg:
			ts.Fatalf("differs from snapshot %s:\n%s", args[1], diff)
		case diff == "" && neg:
			ts.Fatalf("unchanged since snapshot %s", args[1])
		}
		if diff != "" {
			fmt.Fprintln(ts.Stdout(), diff)
		}
	}
}

// snapshots are the script's saved snapshots, kept with its deployment.
func snapshots(ts *testscript.TestScript) map[string]Snapshot {
	d := deployment(ts)
	if d.snapshots == nil {
		d.snapshots = map[string]Snapshot{}
	}
	return d.snapshots
}

func rowCount(s Snapshot) int {
	n := 0
	for _, rows := range s.D1 {
		n += len(rows)
	}
	return n
}

func cmdSite(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || (args[0] != "gone" && args[0] != "present") || neg {
		ts.Fatalf("usage: site gone|present SITE[@HOST]")
	}
	d := deployment(ts)
	name, host, _ := strings.Cut(args[1], "@")
	var site *agenttest.Site
	var a *Agent
	for _, ag := range d.Agents {
		if s, ok := ag.Sites[name]; ok && (host == "" || host == ag.Host) {
			site, a = s, ag
		}
	}
	if site == nil {
		ts.Fatalf("no site %s in the deployment", args[1])
	}
	dbThere := dbExists(ts, d, site.DBName)
	_, err := os.Lstat(site.Path)
	folderThere := err == nil
	switch args[0] {
	case "gone":
		if dbThere || folderThere {
			ts.Fatalf("site %s@%s: database present %v, folder %s present %v", name, a.Host, dbThere, site.Path, folderThere)
		}
	case "present":
		if !dbThere || !folderThere {
			ts.Fatalf("site %s@%s: database present %v, folder %s present %v", name, a.Host, dbThere, site.Path, folderThere)
		}
	}
	fmt.Fprintf(ts.Stdout(), "site %s@%s %s\n", name, a.Host, args[0])
}

func dbExists(ts *testscript.TestScript, d *Deployment, name string) bool {
	db, err := d.MariaDB.Open("")
	ts.Check(err)
	defer db.Close()
	var n int
	ts.Check(db.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name).Scan(&n))
	return n > 0
}

func cmdD1(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 || neg {
		ts.Fatalf("usage: d1 SQL [ARG...]")
	}
	d := deployment(ts)
	b, err := backends.Open(d.Config, d.Getenv, slog.New(slog.DiscardHandler))
	ts.Check(err)
	defer b.Close()
	params := make([]d1.Value, len(args)-1)
	for i, a := range args[1:] {
		params[i] = d1.Text(a)
	}
	res, err := b.D1.Query(context.Background(), args[0], params...)
	ts.Check(err)
	for _, r := range res.Rows {
		parts := make([]string, len(r))
		for i, v := range r {
			// The value without its kind ("integer:0" prints 0); NULL prints null.
			parts[i] = v.String()
			if _, plain, ok := strings.Cut(parts[i], ":"); ok {
				parts[i] = plain
			}
		}
		fmt.Fprintln(ts.Stdout(), strings.Join(parts, "|"))
	}
}

func cmdKV(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: kv NAMESPACE KEY")
	}
	d := deployment(ts)
	b, err := backends.Open(d.Config, d.Getenv, slog.New(slog.DiscardHandler))
	ts.Check(err)
	defer b.Close()
	e, ok, err := b.KV.Get(context.Background(), args[0], args[1])
	ts.Check(err)
	switch {
	case ok && neg:
		ts.Fatalf("kv %s %q is present: %q", args[0], args[1], e.Value)
	case !ok && !neg:
		ts.Fatalf("kv %s %q is missing", args[0], args[1])
	case ok:
		fmt.Fprintf(ts.Stdout(), "%s\n", e.Value)
	}
}

func cmdStripe(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || args[0] != "deleted" {
		ts.Fatalf("usage: stripe deleted CUSTOMER")
	}
	deleted := deployment(ts).Stripe.CustomerDeleted(args[1])
	switch {
	case deleted && neg:
		ts.Fatalf("stripe customer %s is deleted", args[1])
	case !deleted && !neg:
		ts.Fatalf("stripe customer %s is not deleted", args[1])
	}
}

func cmdGetRun(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: getrun VAR")
	}
	out := ts.ReadFile("stdout")
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "run" {
			ts.Setenv(args[0], f[1])
			return
		}
	}
	ts.Fatalf("no 'run ID' line in the previous command's output")
}
