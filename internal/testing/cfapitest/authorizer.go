package cfapitest

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"modernc.org/sqlite"
)

// d1Pragmas are the PRAGMA statements D1 documents as supported; its
// authorizer refuses the others (compile_options, database_list, ...).
var d1Pragmas = map[string]bool{
	"table_list": true, "table_info": true, "table_xinfo": true,
	"index_list": true, "index_info": true, "index_xinfo": true,
	"foreign_key_list": true, "foreign_key_check": true, "foreign_keys": true,
	"defer_foreign_keys": true, "case_sensitive_like": true, "ignore_check_constraints": true,
	"legacy_alter_table": true, "recursive_triggers": true, "reverse_unordered_selects": true,
	"quick_check": true, "optimize": true,
}

// d1DeniedFunctions are SQL functions D1 does not authorize.
var d1DeniedFunctions = map[string]bool{
	"sqlite_version": true, "sqlite_source_id": true, "sqlite_compileoption_get": true,
	"sqlite_compileoption_used": true, "load_extension": true,
}

// authorizer is SQLite's authorizer callback for the D1 database: while a
// request's statement is prepared it denies what D1 denies, and every write
// when the token lacks D1 Write. The server's own bookkeeping queries run
// with it off.
type authorizer struct {
	mu          sync.Mutex
	on          bool
	readOnly    bool
	deniedWrite bool
}

func (a *authorizer) begin(readOnly bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.on, a.readOnly, a.deniedWrite = true, readOnly, false
}

// end switches the authorizer off and reports whether it refused a write
// for want of D1 Write.
func (a *authorizer) end() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.on = false
	return a.deniedWrite
}

func (a *authorizer) check(action sqlite.AuthorizerActionCode, arg1, arg2, _, _ string) sqlite.AuthorizerReturnCode {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.on {
		return sqlite.AuthorizerOK
	}
	switch action {
	case sqlite.AuthAttach, sqlite.AuthDetach, sqlite.AuthTransaction, sqlite.AuthSavepoint:
		return sqlite.AuthorizerDeny
	case sqlite.AuthFunction:
		if d1DeniedFunctions[strings.ToLower(arg2)] {
			return sqlite.AuthorizerDeny
		}
	case sqlite.AuthPragma:
		if !d1Pragmas[strings.ToLower(arg1)] {
			return sqlite.AuthorizerDeny
		}
	case sqlite.AuthInsert, sqlite.AuthUpdate, sqlite.AuthDelete,
		sqlite.AuthCreateIndex, sqlite.AuthCreateTable, sqlite.AuthCreateTrigger, sqlite.AuthCreateView,
		sqlite.AuthCreateTempIndex, sqlite.AuthCreateTempTable, sqlite.AuthCreateTempTrigger, sqlite.AuthCreateTempView,
		sqlite.AuthDropIndex, sqlite.AuthDropTable, sqlite.AuthDropTrigger, sqlite.AuthDropView,
		sqlite.AuthDropTempIndex, sqlite.AuthDropTempTable, sqlite.AuthDropTempTrigger, sqlite.AuthDropTempView,
		sqlite.AuthAlterTable, sqlite.AuthReindex, sqlite.AuthAnalyze, sqlite.AuthCreateVTable, sqlite.AuthDropVTable:
		if a.readOnly {
			a.deniedWrite = true
			return sqlite.AuthorizerDeny
		}
	}
	return sqlite.AuthorizerOK
}

// installAuthorizer registers the authorizer on the D1 database's one
// connection (SetMaxOpenConns(1) keeps it the only one).
func (s *Server) installAuthorizer() error {
	conn, err := s.d1.Conn(context.Background())
	if err != nil {
		return fmt.Errorf("cfapitest: authorizer: %w", err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		r, ok := dc.(sqlite.AuthorizerRegisterer)
		if !ok {
			return fmt.Errorf("sqlite connection %T has no authorizer", dc)
		}
		return r.RegisterAuthorizer(s.auth.check)
	})
	if err != nil {
		return fmt.Errorf("cfapitest: authorizer: %w", err)
	}
	return nil
}
