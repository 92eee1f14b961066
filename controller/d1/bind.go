package d1

import (
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Bind renders v as a placeholder expression and the parameters it needs, so
// that the same SQL stores the same value on SQLite and on D1. D1's REST API
// takes parameters as strings (a JSON number would pass through JavaScript,
// which rounds integers above 2^53 and binds numbers as REAL), so every
// parameter is text:
//
//	NULL     NULL                 (no parameter)
//	integer  CAST(? AS INTEGER)   decimal text
//	real     CAST(? AS REAL)      shortest round-trip decimal text (±Inf as 9e999 / -9e999)
//	text     ?                    the text
//	blob     unhex(?)             hex text (SQLite >= 3.41 has unhex)
//
// NaN binds as NULL, which is what SQLite stores for it anyway.
func Bind(v Value) (placeholder string, params []Value) {
	switch v.Kind {
	case KindInteger:
		return "CAST(? AS INTEGER)", []Value{Text(strconv.FormatInt(v.Int, 10))}
	case KindReal:
		switch {
		case math.IsNaN(v.Real):
			return "NULL", nil
		case math.IsInf(v.Real, 1):
			return "CAST(? AS REAL)", []Value{Text("9e999")}
		case math.IsInf(v.Real, -1):
			return "CAST(? AS REAL)", []Value{Text("-9e999")}
		}
		// The shortest text that parses back to the same float64; CAST keeps
		// integral reals REAL.
		return "CAST(? AS REAL)", []Value{Text(strconv.FormatFloat(v.Real, 'g', -1, 64))}
	case KindText:
		return "?", []Value{v}
	case KindBlob:
		return "unhex(?)", []Value{Text(hex.EncodeToString(v.Blob))}
	default:
		return "NULL", nil
	}
}

// Args collects bound parameters while a statement is built:
//
//	var a d1.Args
//	sql := "DELETE FROM t WHERE id IN (" + a.List(ids) + ")"
//	stmt := d1.Statement{SQL: sql, Params: a.Params()}
//
// Callers chunk on Len so that no statement exceeds MaxParams.
type Args struct {
	params []Value
}

// Add binds v and returns its placeholder expression.
func (a *Args) Add(v Value) string {
	ph, p := Bind(v)
	a.params = append(a.params, p...)
	return ph
}

// List binds every value and returns the placeholders joined by ", ".
func (a *Args) List(vs []Value) string {
	phs := make([]string, len(vs))
	for i, v := range vs {
		phs[i] = a.Add(v)
	}
	return strings.Join(phs, ", ")
}

// Params returns the parameters bound so far, in placeholder order.
func (a *Args) Params() []Value { return a.params }

// Len returns the number of parameters bound so far.
func (a *Args) Len() int { return len(a.params) }

// QuoteIdent quotes a table or column name for SQLite.
func QuoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// ExactColumns returns a select list that reads the named columns exactly on
// both backends: two expressions per column, its storage class and its value
// encoded to survive D1's JSON (integers as decimal text, blobs as hex,
// infinite reals as text). Decode the result with DecodeExact. Plain
// `SELECT *` on D1 rounds integers above 2^53 and loses the difference
// between 2 and 2.0.
func ExactColumns(cols ...string) string {
	parts := make([]string, 0, 2*len(cols))
	for _, c := range cols {
		q := QuoteIdent(c)
		parts = append(parts,
			"typeof("+q+")",
			"CASE typeof("+q+") WHEN 'integer' THEN CAST("+q+" AS TEXT) WHEN 'blob' THEN hex("+q+")"+
				" WHEN 'real' THEN CASE WHEN "+q+" IN (9e999, -9e999) THEN CAST("+q+" AS TEXT) ELSE "+q+" END"+
				" ELSE "+q+" END AS "+q)
	}
	return strings.Join(parts, ", ")
}

// DecodeExact turns the rows of a query selecting ExactColumns back into
// typed values. The returned result has one column per original column.
func DecodeExact(res *Result) (*Result, error) {
	if len(res.Columns)%2 != 0 {
		return nil, fmt.Errorf("decode exact columns: odd column count %d", len(res.Columns))
	}
	out := &Result{Columns: make([]string, 0, len(res.Columns)/2), Rows: make([][]Value, 0, len(res.Rows))}
	for i := 1; i < len(res.Columns); i += 2 {
		out.Columns = append(out.Columns, res.Columns[i])
	}
	for r, row := range res.Rows {
		if len(row) != len(res.Columns) {
			return nil, fmt.Errorf("decode exact row %d: %d values for %d columns", r, len(row), len(res.Columns))
		}
		vals := make([]Value, 0, len(row)/2)
		for i := 0; i < len(row); i += 2 {
			v, err := decodeExactCell(row[i], row[i+1])
			if err != nil {
				return nil, fmt.Errorf("decode exact row %d column %s: %w", r, res.Columns[i+1], err)
			}
			vals = append(vals, v)
		}
		out.Rows = append(out.Rows, vals)
	}
	return out, nil
}

func decodeExactCell(typ, v Value) (Value, error) {
	if typ.Kind != KindText {
		return Value{}, fmt.Errorf("type cell is %s, want text", typ.Kind)
	}
	switch Kind(typ.Text) {
	case KindNull:
		return Null(), nil
	case KindInteger:
		if v.Kind != KindText {
			return Value{}, fmt.Errorf("integer encoded as %s, want text", v.Kind)
		}
		i, err := strconv.ParseInt(v.Text, 10, 64)
		if err != nil {
			return Value{}, fmt.Errorf("parse integer: %w", err)
		}
		return Int(i), nil
	case KindReal:
		switch v.Kind {
		case KindReal:
			return v, nil
		case KindInteger:
			// D1 prints integral reals without a fraction; the nearest
			// float64 of the printed digits is the stored value.
			return Real(float64(v.Int)), nil
		case KindText:
			f, err := strconv.ParseFloat(v.Text, 64)
			if err != nil {
				return Value{}, fmt.Errorf("parse real: %w", err)
			}
			return Real(f), nil
		}
		return Value{}, fmt.Errorf("real encoded as %s", v.Kind)
	case KindText:
		if v.Kind != KindText {
			return Value{}, fmt.Errorf("text encoded as %s", v.Kind)
		}
		return v, nil
	case KindBlob:
		if v.Kind != KindText {
			return Value{}, fmt.Errorf("blob encoded as %s, want hex text", v.Kind)
		}
		b, err := hex.DecodeString(v.Text)
		if err != nil {
			return Value{}, fmt.Errorf("parse blob hex: %w", err)
		}
		return Blob(b), nil
	}
	return Value{}, fmt.Errorf("unknown storage class %q", typ.Text)
}
