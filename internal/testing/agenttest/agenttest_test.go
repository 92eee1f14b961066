package agenttest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/prego/testreset/controller/agents"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

var mdb *mariadbtest.Server

func TestMain(m *testing.M) {
	os.Exit(mariadbtest.Main(m, func(s *mariadbtest.Server) { mdb = s }))
}

// The harness's own promises: a controller configured by it reaches the agent, MakeSite's
// sites are real, and Stop leaves nothing behind.
func TestHarness(t *testing.T) {
	mariadbtest.Need(t, mdb)
	ctx := context.Background()
	a, err := agenttest.Start(ctx, agenttest.Options{MariaDB: mdb})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			a.Stop()
		}
	}()
	site, err := a.MakeSite(ctx, "harness.example.test", agenttest.SiteOptions{Rows: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"site_config.json", "private/files", "private/backups", "public/files/logo-latest.png"} {
		if _, err := os.Lstat(filepath.Join(site.Path, p)); err != nil {
			t.Errorf("site lacks %s: %v", p, err)
		}
	}
	sums, err := agenttest.Checksums(ctx, mdb, site)
	if err != nil || len(sums) != len(site.Tables) {
		t.Fatalf("checksums %v, %v", sums, err)
	}
	_, err = a.MakeSite(ctx, "nodb.example.test", agenttest.SiteOptions{NoDatabase: true})
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := a.ControllerConfig(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.AgentAddress(agenttest.DefaultHost), a.Addr; got != want {
		t.Errorf("controller address %q, want %q", got, want)
	}
	pool, err := agents.NewPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := pool.Check(ctx, agenttest.DefaultHost)
	if !st.Healthy || st.Sites != 2 || st.Mode != "native" {
		t.Errorf("agent status through the controller config = %+v", st)
	}
	c, err := pool.Agent(agenttest.DefaultHost)
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.ListSites(ctx, &agentv1.ListSitesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Sites {
		if got, want := s.DbExists, s.Name == site.Name; got != want {
			t.Errorf("%s db_exists = %v, want %v", s.Name, got, want)
		}
	}

	dir := a.Dir
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stop left %s: %v", dir, err)
	}
	db, err := mdb.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", site.DBName).Scan(&n); err != nil || n != 0 {
		t.Errorf("database %s after Stop: %d, %v", site.DBName, n, err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User = ?", site.DBUser).Scan(&n); err != nil || n != 0 {
		t.Errorf("user %s after Stop: %d, %v", site.DBUser, n, err)
	}
}
