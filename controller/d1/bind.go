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
//	real     CAST(? AS REAL)      shortest round-trip decimal text (±Inf as 9e999 / -9e999),
//	         or (CAST(? AS REAL) / 2^62 ...)  an integer mantissa scaled by exact powers of two
//	         where SQLite's text-to-real conversion could round (see bindReal)
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
		return bindReal(v.Real)
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

// pow62 is 2^62, the largest power of two an int64 literal holds.
const pow62 = "4611686018427387904"

// bindReal binds a finite real so that every backend stores exactly f. SQLite converts
// decimal text to a double with its own algorithm, which on D1 (workerd) is off by one unit
// in the last place for some values with large exponents (-1e-300 arrives as
// -9.999999999999999e-301). A decimal s x 10^d with s < 2^53 and |d| <= 22 converts with a
// single correctly rounded operation everywhere, so such values go as their shortest text.
// Every other value goes as its exact binary form: an integer mantissa M (|M| < 2^53, exact
// as text) times 2^E, written as divisions or multiplications by 2^62 and one smaller power of
// two, each of which is exact in IEEE arithmetic.
func bindReal(f float64) (string, []Value) {
	short := strconv.FormatFloat(f, 'g', -1, 64)
	if fastPathDecimal(f) {
		// CAST keeps integral reals REAL.
		return "CAST(? AS REAL)", []Value{Text(short)}
	}
	frac, exp := math.Frexp(f) // f = frac x 2^exp, 0.5 <= |frac| < 1
	m := int64(frac * (1 << 53))
	e := exp - 53
	for m != 0 && m%2 == 0 && e < 0 {
		m /= 2
		e++
	}
	var b strings.Builder
	b.WriteString("(CAST(? AS REAL)")
	for ; e <= -62; e += 62 {
		b.WriteString(" / " + pow62)
	}
	for ; e >= 62; e -= 62 {
		b.WriteString(" * " + pow62)
	}
	switch {
	case e < 0:
		b.WriteString(" / " + strconv.FormatInt(1<<-e, 10))
	case e > 0:
		b.WriteString(" * " + strconv.FormatInt(1<<e, 10))
	}
	b.WriteString(")")
	return b.String(), []Value{Text(strconv.FormatInt(m, 10))}
}

// fastPathDecimal reports whether f's shortest decimal is s x 10^d with s < 2^53 and
// |d| <= 22: both are exact doubles, so one multiplication or division gives f.
func fastPathDecimal(f float64) bool {
	if f == 0 {
		return !math.Signbit(f)
	}
	e := strconv.FormatFloat(math.Abs(f), 'e', -1, 64) // d.ddddde±XX
	mant, expText, _ := strings.Cut(e, "e")
	exp, err := strconv.Atoi(expText)
	if err != nil {
		return false
	}
	digits := strings.Replace(mant, ".", "", 1)
	s, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || s >= 1<<53 {
		return false
	}
	d := exp - (len(digits) - 1)
	return d >= -22 && d <= 22
}
