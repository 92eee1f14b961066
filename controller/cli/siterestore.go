package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/controller/runfolder"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// runSitesApproveRestore is the second operator's half of restoring a `sites backup`
// folder: it checks the backup and signs a restore grant for its site, bound to the
// folder's manifest, for the operator who will run the restore.
func runSitesApproveRestore(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "sites approve-restore")
	cfgPath := fs.String("config", "", "resetctl configuration file (the approver's)")
	forOp := fs.String("for", "", "operator who runs the restore (default: who made the backup)")
	expires := fs.Duration("expires", 24*time.Hour, "how long the approval is valid (at most 168h)")
	out := fs.String("out", "", "approval file to write (default DIR/"+runfolder.ApprovalFile+")")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	dir := fs.Arg(0)
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	cert, key, err := operatorIdentity(cfg)
	if err != nil {
		return err
	}
	sb, err := runfolder.OpenSiteBackup(dir)
	if err != nil {
		return withHint(err, "name a folder written by 'resetctl sites backup --out DIR' (its manifest.json and the site's two artifacts)")
	}
	grantee := *forOp
	if grantee == "" {
		grantee = sb.Manifest.Operator
	}
	path := *out
	if path == "" {
		path = filepath.Join(dir, runfolder.ApprovalFile)
	}
	if _, err := os.Lstat(path); err == nil {
		return withHint(fmt.Errorf("approve restore: %s already exists", path), "remove it, or name another file with --out")
	}
	a, err := runfolder.ApproveSiteRestore(sb, grantee, cert, key, *expires, time.Now())
	if err != nil {
		switch {
		case errors.Is(err, runfolder.ErrSelfApproval):
			return withHint(err, "a second operator approves the restore; name who runs it with --for")
		case errors.Is(err, runfolder.ErrIntegrity):
			return withHint(err, "the backup changed since it was made: nothing was approved")
		}
		return err
	}
	if err := runfolder.WriteApproval(path, a); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "site %s on %s, backed up by %s at %s", sb.Site, sb.Host, sb.Manifest.Operator, sb.Manifest.Time.UTC().Format(time.RFC3339))
	if sb.Manifest.PlanID != "" {
		fmt.Fprintf(env.Stdout, " (%s)", sb.Manifest.PlanID)
	}
	fmt.Fprintln(env.Stdout)
	for _, art := range sb.Artifacts {
		fmt.Fprintf(env.Stdout, "  %s  %s  %d bytes  sha256 %s (verified)\n", art.Kind, art.File, art.Bytes, art.SHA256)
	}
	fmt.Fprintf(env.Stdout, "restore approved by %s for %s until %s: %s\n", a.Approver.Identity, a.Grantee, a.ExpiresAt.Format(time.RFC3339), path)
	return nil
}

// runSitesRestore restores a site from a `sites backup` folder through its node, with a
// second operator's approval (sites approve-restore). A site that still exists is refused.
func runSitesRestore(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "sites restore")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	approvalPath := fs.String("approval", "", "approval file from 'resetctl sites approve-restore' (default DIR/"+runfolder.ApprovalFile+")")
	takeOver := fs.Bool("take-over", false, "take over the expired lease of a dead run on the site (recorded)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	dir := fs.Arg(0)
	cfg, pool, err := openAgents(*cfgPath)
	if err != nil {
		return err
	}
	defer pool.Close()
	sb, err := runfolder.OpenSiteBackup(dir)
	if err != nil {
		return withHint(err, "name a folder written by 'resetctl sites backup --out DIR' (its manifest.json and the site's two artifacts)")
	}
	if err := sb.Verify(); err != nil {
		return withHint(fmt.Errorf("restore %s on %s: %w", sb.Site, sb.Host, err), "the backup changed or is damaged: nothing was restored")
	}
	path := *approvalPath
	if path == "" {
		path = filepath.Join(dir, runfolder.ApprovalFile)
	}
	approval, err := runfolder.ReadApproval(path)
	if errors.Is(err, os.ErrNotExist) {
		return withHint(fmt.Errorf("restore %s on %s: no approval (%s)", sb.Site, sb.Host, path),
			"a second operator runs 'resetctl sites approve-restore --config THEIRS.yaml %s' first", dir)
	}
	if err != nil {
		return err
	}
	me, _ := pool.Operator()
	g, err := approval.Check(sb, me, pool.CAPool(), time.Now())
	if err != nil {
		if errors.Is(err, runfolder.ErrSelfApproval) {
			return withHint(err, "a second operator approves the restore, and the operator it names runs it")
		}
		return withHint(err, "a second operator runs 'resetctl sites approve-restore --config THEIRS.yaml %s' again", dir)
	}
	client, err := pool.Agent(sb.Host)
	if err != nil {
		return err
	}

	l, err := leaseSite(ctx, env, cfg, sb, certs.Identity(me), "sites restore of "+sb.Site+" from "+dir, *takeOver)
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Release(context.WithoutCancel(ctx)); err != nil {
			fmt.Fprintf(env.Stderr, "resetctl: warning: release lease: %v\n", err)
		}
	}()
	if err := refuseLiveSite(ctx, client, sb, cfg.Agents.Timeout); err != nil {
		return err
	}
	if err := l.Check(ctx); err != nil {
		return err
	}
	planID := sb.Manifest.PlanID
	if planID == "" {
		planID = "site-backup-" + sb.ManifestSHA256[:12]
	}
	begin := &agentv1.RestoreBegin{Site: sb.Site, PlanId: planID, PlanSha256: sb.ManifestSHA256, Grant: g}
	resp, err := runfolder.RestoreSite(ctx, client, begin, sb.Host, runfolder.Dir(sb.Dir), sb.Artifacts)
	if err != nil {
		return err
	}
	detail, err := runfolder.DescribeRestore(sb.Host, resp)
	if err != nil {
		return withHint(err, "run the same restore again: what is back is left as it is")
	}
	fmt.Fprintf(env.Stdout, "restored %s\n", detail)
	return nil
}

// leaseSite takes the site's lease in the config's run store: one process works on a site at
// a time (as execute and restore do).
func leaseSite(ctx context.Context, env *Env, cfg *config.Config, sb *runfolder.SiteBackup, operator, action string, takeOver bool) (lease.Lease, error) {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	team, err := openTeam(tctx, env, cfg)
	cancel()
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	l, err := team.Locker.Acquire(ctx, lease.Request{
		Targets:  []lease.Target{lease.Site(sb.Host, sb.Site)},
		Holder:   lease.Holder{Name: operator, Machine: host, PID: os.Getpid(), Action: action},
		TakeOver: takeOver,
	})
	if err != nil {
		if isHeld(err) {
			return nil, heldHint(fmt.Errorf("restore %s on %s: %w", sb.Site, sb.Host, err))
		}
		return nil, err
	}
	return l, nil
}

// refuseLiveSite refuses a site that still exists (folder, database and user all there): a
// restore never replaces a live site. A site left partly there (an interrupted drop or
// restore) is completed: the node restores the missing parts and leaves the others as they
// are.
func refuseLiveSite(ctx context.Context, client agentv1.AgentClient, sb *runfolder.SiteBackup, timeout time.Duration) error {
	ictx, cancel := context.WithTimeout(ctx, timeout)
	ins, err := client.InspectSite(ictx, &agentv1.InspectSiteRequest{Site: sb.Site})
	cancel()
	switch {
	case status.Code(err) == codes.NotFound:
	case err != nil:
		return fmt.Errorf("restore %s on %s: inspect: %w", sb.Site, sb.Host, err)
	case ins.GetSite().GetDbExists() && ins.GetSite().GetDbUserExists():
		return withHint(fmt.Errorf("restore %s on %s: %w (its folder, database %s and database user are there)", sb.Site, sb.Host,
			runfolder.ErrSitePresent, ins.GetSite().GetDbName()),
			"a backup is restored only in place of a site that is gone; nothing was changed and the approval was not used")
	}
	return nil
}
