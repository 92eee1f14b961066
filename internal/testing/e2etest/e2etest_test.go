package e2etest_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/agents"
	"github.com/prego/testreset/internal/testing/e2etest"
	"github.com/prego/testreset/internal/testing/mariadbtest"
)

// TestTwoNodesAsProcessesKillAndRestart starts a deployment of two nodes whose agents run as
// their own processes, kills one as a crash would and starts it again on the same address.
func TestTwoNodesAsProcessesKillAndRestart(t *testing.T) {
	mariadbtest.Need(t, mdb)
	agentBin, err := exec.LookPath("reset-agent")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	d, err := e2etest.Start(ctx, e2etest.Options{Dir: t.TempDir(), MariaDB: mdb, AgentBin: agentBin, Nodes: []e2etest.Node{
		{Host: "node1.internal", Sites: []string{"qa1a.erp.example.test"}},
		{Host: "node2.internal", Sites: []string{"qa1b.erp.example.test", "acme.prod.example.com"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	pool, err := agents.NewPool(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, a := range d.Agents {
		st := pool.Check(ctx, a.Host)
		if got, want := st.Sites, len(a.Sites); !st.Healthy || got != want {
			t.Errorf("%s: healthy %v, %d sites, want %d (%s)", a.Host, st.Healthy, got, want, st.Error)
		}
	}

	p := d.Agent("node2.internal").Process()
	if p == nil || p.Pid() == 0 {
		t.Fatal("node2 does not run as a process")
	}
	p.Kill()
	if p.Pid() != 0 {
		t.Error("Pid after Kill: want 0")
	}
	if st := pool.Check(ctx, "node2.internal"); st.Healthy {
		t.Fatal("node2 healthy after Kill")
	}
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The old connection may be in its reconnect backoff: ask over a new one.
	fresh, err := agents.NewPool(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if st := fresh.Check(ctx, "node2.internal"); !st.Healthy || st.Sites != 2 {
		t.Errorf("node2 after Restart: healthy %v, %d sites (%s)", st.Healthy, st.Sites, st.Error)
	}
	if err := p.Exited(); err != nil {
		t.Errorf("Exited while running: %v", err)
	}
}

func TestStartRefusesWithoutDir(t *testing.T) {
	_, err := e2etest.Start(t.Context(), e2etest.Options{})
	if err == nil || !strings.Contains(err.Error(), "Dir") {
		t.Errorf("Start without Dir: %v, want an error naming Dir", err)
	}
}
