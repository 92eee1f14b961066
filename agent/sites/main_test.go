package sites_test

import (
	"database/sql"
	"fmt"
	"os"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/prego/testreset/internal/testing/mariadbtest"
)

// The admin account the tests give the Manager. Its password has every character that needs
// escaping in an option file or an SQL literal, so that the defaults files are tested for real.
const (
	adminUser     = "agentadmin"
	adminPassword = `adm'in"pw\#1 x`
)

var (
	server  *mariadbtest.Server // one throwaway MariaDB for the package
	adminDB *sql.DB             // agentadmin over the socket, no default database
	rootDB  *sql.DB             // root, for fixtures
)

func TestMain(m *testing.M) {
	os.Exit(mariadbtest.Main(m, func(s *mariadbtest.Server) {
		server = s
		var err error
		if rootDB, err = s.Open(""); err != nil {
			panic(err)
		}
		for _, q := range []string{
			fmt.Sprintf("CREATE USER '%s'@'localhost' IDENTIFIED BY '%s'", adminUser, sqlEscape(adminPassword)),
			fmt.Sprintf("GRANT ALL PRIVILEGES ON *.* TO '%s'@'localhost' WITH GRANT OPTION", adminUser),
		} {
			if _, err := rootDB.Exec(q); err != nil {
				panic(fmt.Sprintf("%s: %v", q, err))
			}
		}
		c := mysql.NewConfig()
		c.User, c.Passwd, c.Net, c.Addr = adminUser, adminPassword, "unix", s.Socket
		if adminDB, err = sql.Open("mysql", c.FormatDSN()); err != nil {
			panic(err)
		}
		if err := adminDB.Ping(); err != nil {
			panic(fmt.Sprintf("admin login: %v", err))
		}
	}))
}
