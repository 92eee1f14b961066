package runfolder

import (
	"fmt"
	"time"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/kv"
)

// D1Backup is the D1 backup file: every row with its column names and typed values.
type D1Backup struct {
	TakenAt  time.Time     `json:"taken_at"`
	Bookmark string        `json:"bookmark,omitempty"` // D1 Time Travel, Cloudflare only
	Tables   []TableBackup `json:"tables"`             // delete order (children first)
}

// TableBackup holds one table's rows.
type TableBackup struct {
	Table      string       `json:"table"`
	Columns    []string     `json:"columns"`
	KeyColumns []string     `json:"key_columns"`
	Rows       [][]d1.Value `json:"rows"`
}

// KVBackup is the KV backup file.
type KVBackup struct {
	TakenAt time.Time `json:"taken_at"`
	Entries []KVEntry `json:"entries"`
}

// KVEntry is one key with its value, metadata and expiration.
type KVEntry struct {
	Namespace string `json:"namespace"`
	kv.Entry
	Routing bool `json:"routing,omitempty"`
}

// Keys returns the key of every row in the table's backup, taken from file. A backup whose
// rows lack a key column is refused, not indexed blindly.
func (t TableBackup) Keys(file string) (inventory.TableRows, error) {
	idx := ColumnIndexes(t.Columns, t.KeyColumns)
	tr := inventory.TableRows{Table: t.Table, KeyColumns: t.KeyColumns}
	for _, j := range idx {
		if j < 0 {
			return tr, fmt.Errorf("%s: table %s: key column missing from the backup", file, t.Table)
		}
	}
	for n, r := range t.Rows {
		key := make([]d1.Value, len(idx))
		for i, j := range idx {
			if j >= len(r) {
				return tr, fmt.Errorf("%s: table %s: row %d has %d values for %d columns", file, t.Table, n+1, len(r), len(t.Columns))
			}
			key[i] = r[j]
		}
		tr.Keys = append(tr.Keys, key)
	}
	return tr, nil
}

// ColumnIndexes returns the index of each of want in cols, -1 for a missing one.
func ColumnIndexes(cols, want []string) []int {
	out := make([]int, len(want))
	for i, w := range want {
		out[i] = -1
		for j, c := range cols {
			if c == w {
				out[i] = j
			}
		}
	}
	return out
}
