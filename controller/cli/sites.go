package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/agents"
	"github.com/prego/testreset/controller/runfolder"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

func runSites(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		return usageErr("sites needs a subcommand: list, backup, approve-restore or restore")
	}
	switch args[0] {
	case "list":
		return runSitesList(ctx, env, args[1:])
	case "backup":
		return runSitesBackup(ctx, env, args[1:])
	case "approve-restore":
		return runSitesApproveRestore(ctx, env, args[1:])
	case "restore":
		return runSitesRestore(ctx, env, args[1:])
	case "-h", "--help", "help":
		fmt.Fprintln(env.Stderr, "usage:\n"+
			"  resetctl sites list            --config F [--host H] [--json]\n"+
			"  resetctl sites backup          --config F --host H SITE --out DIR [--plan-id ID]\n"+
			"  resetctl sites approve-restore --config F DIR [--for OPERATOR] [--expires 24h] [--out FILE]\n"+
			"  resetctl sites restore         --config F DIR [--approval FILE] [--take-over]")
		return nil
	}
	return usageErr("sites: unknown subcommand %q (want list, backup, approve-restore or restore)", args[0])
}

// siteRow is one line of `sites list` (one JSON object of --json). A host whose agent did
// not answer is one row with an empty name and the error.
type siteRow struct {
	Host         string `json:"host"`
	Name         string `json:"name"`
	DBName       string `json:"db_name"`
	DBUser       string `json:"db_user"`
	DBExists     bool   `json:"db_exists"`
	DBUserExists bool   `json:"db_user_exists"`
	DBBytes      int64  `json:"db_bytes"`
	FilesBytes   int64  `json:"files_bytes"`
	Protected    bool   `json:"protected"`
	Error        string `json:"error"`
}

func runSitesList(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "sites list")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	host := fs.String("host", "", "only this host's agent (default: every known agent)")
	asJSON := fs.Bool("json", false, "print a JSON array, one object per site")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg, pool, err := openAgents(*cfgPath)
	if err != nil {
		return err
	}
	defer pool.Close()
	hosts, err := agentHosts(cfg, pool, *host)
	if err != nil {
		return err
	}
	perHost := eachHost(hosts, func(h string) []siteRow { return listHost(ctx, pool, h, cfg.Agents.Timeout) })
	rows := []siteRow{}
	down := 0
	for _, rs := range perHost {
		if len(rs) == 1 && rs[0].Name == "" && rs[0].Error != "" {
			down++
		}
		rows = append(rows, rs...)
	}
	if *asJSON {
		if err := writeJSON(env.Stdout, rows); err != nil {
			return err
		}
	} else {
		t := newTable(env.Stdout, "HOST", "SITE", "DATABASE", "DB", "DB SIZE", "FILES", "PROTECTED", "ERROR")
		for _, r := range rows {
			db := "-"
			if r.Name != "" {
				db = "missing"
				if r.DBExists {
					db = "yes"
				}
			}
			t.row(r.Host, r.Name, r.DBName, db, runfolder.HumanBytes(r.DBBytes), runfolder.HumanBytes(r.FilesBytes), r.Protected, r.Error)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if down > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of %d agents unreachable", down, len(hosts))}
	}
	return nil
}

// listHost asks one agent for its sites; an unreachable agent becomes one error row.
func listHost(ctx context.Context, pool *agents.Pool, host string, timeout time.Duration) []siteRow {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := pool.Agent(host)
	if err == nil {
		var resp *agentv1.ListSitesResponse
		if resp, err = c.ListSites(ctx, &agentv1.ListSitesRequest{}); err == nil {
			rows := make([]siteRow, 0, len(resp.Sites))
			for _, s := range resp.Sites {
				rows = append(rows, siteRow{
					Host: host, Name: s.Name, DBName: s.DbName, DBUser: s.DbUser, DBExists: s.DbExists,
					DBUserExists: s.DbUserExists, DBBytes: s.DbBytes, FilesBytes: s.FilesBytes,
					Protected: s.Protected, Error: s.Error,
				})
			}
			return rows
		}
	}
	return []siteRow{{Host: host, Error: fmt.Sprintf("agent %s (%s): %v", host, pool.Address(host), err)}}
}

func runSitesBackup(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "sites backup")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	host := fs.String("host", "", "the node the site lives on")
	out := fs.String("out", "", "folder for the two artifacts and manifest.json (created if missing)")
	planID := fs.String("plan-id", "", "plan or ticket id, recorded in the agent's audit log and the manifest")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	site := fs.Arg(0)
	if *host == "" {
		return usageErr("sites backup: --host is required")
	}
	if *out == "" {
		return usageErr("sites backup: --out is required")
	}
	if !certs.ValidDNSName(site) {
		return usageErr("sites backup: %q is not a site name (a lower-case DNS name)", site)
	}
	_, pool, err := openAgents(*cfgPath)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fmt.Errorf("backup %s: %w", site, err)
	}
	if _, err := os.Lstat(filepath.Join(*out, runfolder.ManifestFile)); err == nil {
		return withHint(fmt.Errorf("backup %s: %s already holds a backup (manifest.json)", site, *out), "choose a new or empty --out folder")
	}
	c, err := pool.Agent(*host)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()
	stream, err := c.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: site, PlanId: *planID})
	if err != nil {
		return fmt.Errorf("backup %s on %s: %w", site, *host, err)
	}
	var progress io.Writer
	if env.Terminal {
		progress = env.progress
	}
	arts, err := runfolder.Receive(ctx, stream, *host, site, runfolder.Folder{Dir: *out}, progress)
	if err != nil {
		if errors.Is(err, runfolder.ErrIntegrity) {
			return withHint(fmt.Errorf("backup %s on %s: %w", site, *host, err), "the transfer or the disk corrupted the artifact; run the backup again")
		}
		return fmt.Errorf("backup %s on %s: %w", site, *host, err)
	}
	op, _ := pool.Operator()
	operator := certs.Identity(op)
	m := &runfolder.Manifest{PlanID: *planID, Operator: operator, Time: started.UTC()}
	for i := range arts {
		arts[i].Time, arts[i].Operator = started.UTC(), operator
	}
	m.Add(arts...)
	if err := runfolder.CreateManifest(*out, m); err != nil {
		return fmt.Errorf("backup %s: %w", site, err)
	}
	for _, a := range arts {
		fmt.Fprintf(env.Stdout, "%s  %s  %d bytes  sha256 %s\n", a.Kind, filepath.Join(*out, a.File), a.Bytes, a.SHA256)
	}
	fmt.Fprintf(env.Stdout, "manifest  %s\n", filepath.Join(*out, runfolder.ManifestFile))
	return nil
}
