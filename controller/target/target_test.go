package target_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/target"
)

func TestParseSiteRef(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    target.SiteRef
		wantErr bool
	}{
		{in: "qa1.erp.example.test@node1.internal", want: target.Site("node1.internal", "qa1.erp.example.test")},
		{in: "  QA1.erp.example.test@Node1.Internal ", want: target.Site("node1.internal", "qa1.erp.example.test")},
		{in: "qa1.erp.example.test", wantErr: true},
		{in: "@node1", wantErr: true},
		{in: "site@", wantErr: true},
		{in: "a@b@c", wantErr: true},
		{in: "../etc@node1", wantErr: true},
		{in: "a/b@node1", wantErr: true},
		{in: "site@node 1", wantErr: true},
		{in: "site\x1b[31m@node1", wantErr: true},
		{in: "-site@node1", wantErr: true},
		{in: strings.Repeat("a", 64) + "@node1", wantErr: true},
	} {
		got, err := target.ParseSiteRef(tc.in)
		if tc.wantErr {
			if err == nil || !errors.Is(err, target.ErrInvalidSite) {
				t.Errorf("ParseSiteRef(%q) = %v, %v; want ErrInvalidSite", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSiteRef(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, err := target.ParseSiteRef(got.String()); err != nil || back != got {
			t.Errorf("round trip of %v: %v, %v", got, back, err)
		}
	}
}

func TestStepNames(t *testing.T) {
	site := target.Site("node1.internal", "a.example.test")
	for _, tc := range []struct {
		step target.Step
		name string
	}{
		{target.Step{Kind: target.BackupD1}, "backup d1"},
		{target.Step{Kind: target.BackupSite, Site: site}, "backup site a.example.test@node1.internal"},
		{target.Step{Kind: target.DropSite, Site: site}, "drop site a.example.test@node1.internal"},
		{target.Step{Kind: target.RoutingOff}, "routing keys off"},
		{target.Step{Kind: target.RestoreSite, Site: site}, "restore site a.example.test@node1.internal"},
		{target.Step{Kind: target.VerifyRestore}, "verify restore"},
		{target.Step{Kind: target.Record}, "change record"},
	} {
		if got := tc.step.String(); got != tc.name {
			t.Errorf("String() = %q, want %q", got, tc.name)
		}
		if err := tc.step.Validate(); err != nil {
			t.Errorf("Validate(%v): %v", tc.step, err)
		}
		got, err := target.ParseStep(tc.name)
		if err != nil || got != tc.step {
			t.Errorf("ParseStep(%q) = %+v, %v; want %+v", tc.name, got, err, tc.step)
		}
	}
	for _, bad := range []string{"", "drop site", "drop site nohost", "verify x@y", "backup d1 extra", "explode"} {
		if got, err := target.ParseStep(bad); err == nil {
			t.Errorf("ParseStep(%q) = %+v, want an error", bad, got)
		}
	}
	for _, bad := range []target.Step{{Kind: "explode"}, {Kind: target.DropSite}, {Kind: target.Verify, Site: site}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted", bad)
		}
	}
}

func TestArtifactKinds(t *testing.T) {
	for k, want := range map[target.ArtifactKind]bool{target.ArtifactD1: false, target.ArtifactKV: false, target.ArtifactDatabase: true, target.ArtifactFiles: true} {
		if got := k.OfSite(); got != want {
			t.Errorf("%s.OfSite() = %v, want %v", k, got, want)
		}
	}
}
