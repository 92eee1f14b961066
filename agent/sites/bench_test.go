package sites_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// BenchmarkBackup compares Backup's database artifact (without gRPC) with `mariadb-dump ... |
// gzip > file` on the same database and reports the ratio of their throughputs and the peak
// Go heap during Backup. SITES_BENCH_MB sets the table data size (default 64).
//
//	go test -run '^$' -bench Backup -benchtime 1x ./agent/sites/
func BenchmarkBackup(b *testing.B) {
	mb := 64
	if v := os.Getenv("SITES_BENCH_MB"); v != "" {
		var err error
		if mb, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	tb := newBench(b, nil)
	db := "_bench" + randHex(4)
	conn, err := rootDB.Conn(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		"CREATE DATABASE `" + db + "`",
		"CREATE TABLE `" + db + "`.`tabItem` (name VARCHAR(140) PRIMARY KEY, email VARCHAR(140), hash CHAR(32), body TEXT, modified DATETIME)",
	} {
		if _, err := conn.ExecContext(b.Context(), q); err != nil {
			b.Fatal(err)
		}
	}
	// About 700 bytes a row of text that compresses like application data (3-4x).
	rows := mb << 20 / 700
	for start := 1; start <= rows; start += 100000 {
		end := min(start+99999, rows)
		q := fmt.Sprintf("INSERT INTO `%s`.`tabItem` SELECT CONCAT('ITEM-', seq), CONCAT('user', seq MOD 9973, '@example.com'), MD5(seq), "+
			"CONCAT_WS(' ', SHA2(seq, 512), REPEAT(CONCAT('lorem ipsum ', seq MOD 97, ' dolor '), 12), SHA2(seq * 7, 256)), NOW() FROM `%s`.seq_%d_to_%d", db, db, start, end)
		if _, err := conn.ExecContext(b.Context(), q); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := conn.ExecContext(b.Context(), "ANALYZE TABLE `"+db+"`.`tabItem`"); err != nil {
		b.Fatal(err)
	}
	var dataBytes int64
	if err := conn.QueryRowContext(b.Context(), "SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", db).Scan(&dataBytes); err != nil {
		b.Fatal(err)
	}
	site := filepath.Join(tb.dir, "sites", "bench.example.com")
	mustMkdir(b, site)
	if err := os.WriteFile(filepath.Join(site, "site_config.json"), []byte(`{"db_name": "`+db+`"}`), 0o600); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	for range b.N {
		// Baseline: the shell pipeline, as root over the socket.
		out := filepath.Join(b.TempDir(), "dump.sql.gz")
		start := time.Now()
		cmd := exec.CommandContext(b.Context(), "sh", "-c", fmt.Sprintf(
			"mariadb-dump --no-defaults -uroot --socket=%s --single-transaction --quick --routines --triggers --events %s | gzip > %s",
			server.Socket, db, out))
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, o)
		}
		base := time.Since(start)
		fi, _ := os.Stat(out)

		var peak, sent atomic.Int64
		stop := make(chan struct{})
		go func() {
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				if v := int64(ms.HeapInuse); v > peak.Load() {
					peak.Store(v)
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		start = time.Now()
		var dbDone time.Duration
		_, err := tb.m.Backup(b.Context(), "bench.example.com", func(m *agentv1.BackupSiteResponse) error {
			if c := m.GetChunk(); c != nil {
				sent.Add(int64(len(c.Data)))
			}
			if tr := m.GetTrailer(); tr != nil && tr.Kind == agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE {
				dbDone = time.Since(start)
			}
			return nil
		})
		close(stop)
		if err != nil {
			b.Fatal(err)
		}
		ratio := base.Seconds() / dbDone.Seconds()
		b.ReportMetric(ratio, "throughput-ratio")
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		b.Logf("table data %d MiB: mariadb-dump|gzip %v (%d MiB gz), Backup database artifact %v (%d MiB gz), ratio %.2f, peak heap %.1f MiB",
			dataBytes>>20, base.Round(time.Millisecond), fi.Size()>>20, dbDone.Round(time.Millisecond), sent.Load()>>20, ratio,
			float64(peak.Load())/(1<<20))
	}
}
