package cli

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/internal/cliflag"
)

func runCerts(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		return usageErr("certs needs a subcommand: init or issue")
	}
	switch args[0] {
	case "init":
		fs := newFlags(env, "certs init")
		dir := fs.String("dir", "", "folder for ca.pem and ca-key.pem")
		days := fs.Int("days", certs.DefaultCADays, "validity in days")
		if err := parse(fs, args[1:], 0); err != nil {
			return err
		}
		if *dir == "" {
			return usageErr("certs init needs --dir")
		}
		if err := certs.Init(*dir, certs.InitOptions{Days: *days}); err != nil {
			if errors.Is(err, certs.ErrExists) {
				return withHint(err, "a CA already exists there; issue certificates with it, or choose another --dir")
			}
			return err
		}
		fmt.Fprintf(env.Stdout, "wrote %s/%s and %s/%s\n", *dir, certs.CAFile, *dir, certs.CAKeyFile)
		return nil
	case "issue":
		fs := newFlags(env, "certs issue")
		dir := fs.String("dir", "", "CA folder; the certificate is written there")
		role := fs.String("role", "", "agent or operator")
		name := fs.String("name", "", "agent: node name; operator: e-mail address")
		days := fs.Int("days", 0, "validity in days (default: agent 365, operator 90)")
		var hosts, ips cliflag.Strings
		fs.Var(&hosts, "host", "agent DNS name (repeatable)")
		fs.Var(&ips, "ip", "agent IP address (repeatable)")
		if err := parse(fs, args[1:], 0); err != nil {
			return err
		}
		if *dir == "" || *role == "" || *name == "" {
			return usageErr("certs issue needs --dir, --role and --name")
		}
		r, err := certs.ParseRole(*role)
		if err != nil {
			return usageErr("%v", err)
		}
		req := certs.IssueRequest{Role: r, Name: *name, Hosts: hosts, Days: *days}
		for _, s := range ips {
			ip := net.ParseIP(s)
			if ip == nil {
				return usageErr("--ip %q is not an IP address", s)
			}
			req.IPs = append(req.IPs, ip)
		}
		certPath, keyPath, err := certs.Issue(*dir, req)
		if err != nil {
			if errors.Is(err, certs.ErrExists) {
				return withHint(err, "certificates are never overwritten; remove the old pair first to re-issue")
			}
			return err
		}
		fmt.Fprintf(env.Stdout, "wrote %s and %s\n", certPath, keyPath)
		return nil
	}
	return usageErr("unknown certs subcommand %q (want init or issue)", args[0])
}
