package inventory

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/controller/config"
)

// tenantsWithRuntime fills inv.Tenants from the runtime table's collected rows, or reads
// them when the runtime table is not linked to the tenant root by a foreign key.
func tenantsWithRuntime(ctx context.Context, c *collector, spec *config.Spec, ids []string, targets map[string][]int, inv *Inventory) error {
	rt := spec.Runtime
	runtime := map[string]map[string]string{}
	if rt.Table != "" && len(ids) > 0 {
		r := c.rows[rt.Table]
		if r == nil {
			var work []pending
			for _, st := range c.selects(c.schema.Tables[rt.Table], []string{rt.TenantColumn}, textTuples(ids), false) {
				work = append(work, pending{rt.Table, st})
			}
			if _, err := c.run(ctx, work); err != nil {
				return fmt.Errorf("read runtime: %w", err)
			}
			inv.D1Requests = c.requests
			r = c.rows[rt.Table]
		}
		if r != nil {
			for i := range r.Rows {
				vals := map[string]string{}
				for j, col := range r.Columns {
					if !r.Rows[i][j].IsNull() {
						vals[col] = plain(r.Rows[i][j])
					}
				}
				runtime[vals[rt.TenantColumn]] = vals
			}
		}
	}
	for _, id := range ids {
		t := Tenant{ID: id, Targets: targets[id]}
		if vals, ok := runtime[id]; ok {
			t.Runtime = vals
			t.Site = vals[rt.SiteColumn]
			t.Host = vals[rt.HostColumn]
		}
		inv.Tenants = append(inv.Tenants, t)
	}
	return nil
}

// sites asks each tenant's node about its site: whether the folder, the database and its
// user exist, their sizes, and whether the node protects the site.
func sites(ctx context.Context, insp SiteInspector, inv *Inventory, reports []TargetReport) {
	for _, tn := range inv.Tenants {
		if tn.Site == "" {
			continue
		}
		s := Site{Tenant: tn.ID, Name: tn.Site, Host: tn.Host, Targets: tn.Targets}
		switch {
		case tn.Host == "":
			s.Error = "tenant_runtime has no host for this site"
		case insp == nil:
			s.Error = "no agent connection"
		default:
			resp, err := insp.InspectSite(ctx, tn.Host, tn.Site)
			switch {
			case status.Code(err) == codes.NotFound:
				// Already gone: nothing to drop, nothing to block.
			case err != nil:
				s.Error = fmt.Sprintf("agent %s: %s: %s", tn.Host, status.Code(err), status.Convert(err).Message())
			default:
				si := resp.GetSite()
				s.Exists = true
				s.DBName, s.DBExists, s.DBUserExists = si.DbName, si.DbExists, si.DbUserExists
				s.DBBytes, s.FilesBytes, s.Protected = si.DbBytes, si.FilesBytes, si.Protected
				if si.Error != "" {
					s.Error = si.Error
				}
			}
		}
		if s.Error != "" {
			inv.Errors = append(inv.Errors, fmt.Sprintf("site %s on %s: %s", s.Name, s.Host, s.Error))
		}
		inv.Sites = append(inv.Sites, s)
		for _, t := range tn.Targets {
			reports[t].Sites = append(reports[t].Sites, s.Ref().String())
		}
	}
}
