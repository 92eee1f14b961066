package d1_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/d1"
)

func TestValueJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		v    d1.Value
		want string
	}{
		{"int beyond 2^53", d1.Int(9007199254740993), `{"type":"integer","value":"9007199254740993"}`},
		{"min int64", d1.Int(math.MinInt64), `{"type":"integer","value":"-9223372036854775808"}`},
		{"max int64", d1.Int(math.MaxInt64), `{"type":"integer","value":"9223372036854775807"}`},
		{"real", d1.Real(0.1), `{"type":"real","value":"0.1"}`},
		{"integral real", d1.Real(2), `{"type":"real","value":"2"}`},
		{"negative zero", d1.Real(math.Copysign(0, -1)), `{"type":"real","value":"-0"}`},
		{"inf", d1.Real(math.Inf(-1)), `{"type":"real","value":"-Inf"}`},
		{"text like number", d1.Text("00123"), `{"type":"text","value":"00123"}`},
		{"text like exponent", d1.Text("1e5"), `{"type":"text","value":"1e5"}`},
		{"empty text", d1.Text(""), `{"type":"text","value":""}`},
		{"invalid utf8 text", d1.Text("a\xffb"), `{"type":"text","value":"Yf9i","encoding":"base64"}`},
		{"blob", d1.Blob([]byte{0x00, 0xff, 0x7f}), `{"type":"blob","value":"AP9/"}`},
		{"empty blob", d1.Blob(nil), `{"type":"blob","value":""}`},
		{"null", d1.Null(), `{"type":"null"}`},
		{"zero value is null", d1.Value{}, `{"type":"null"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b); got != tt.want {
				t.Errorf("marshal = %s, want %s", got, tt.want)
			}
			var got d1.Value
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tt.v) {
				t.Errorf("round trip = %v, want %v", got, tt.v)
			}
		})
	}
}

func TestValueUnmarshalErrors(t *testing.T) {
	for _, in := range []string{
		`{"type":"integer","value":"9223372036854775808"}`,
		`{"type":"integer"}`,
		`{"type":"real","value":"x"}`,
		`{"type":"blob","value":"!!"}`,
		`{"type":"date","value":"2024"}`,
		`{"type":"text","value":"x","encoding":"rot13"}`,
	} {
		var v d1.Value
		if err := json.Unmarshal([]byte(in), &v); err == nil {
			t.Errorf("unmarshal %s = %v, want error", in, v)
		}
	}
}

func TestValueStringDistinct(t *testing.T) {
	vals := []d1.Value{d1.Int(1), d1.Real(1), d1.Text("1"), d1.Blob([]byte("1")), d1.Null(), d1.Text("integer:1")}
	seen := map[string]d1.Value{}
	for _, v := range vals {
		if prev, ok := seen[v.String()]; ok {
			t.Errorf("%v and %v share String() %q", prev, v, v.String())
		}
		seen[v.String()] = v
	}
	if got := d1.Int(-5).String(); got != "integer:-5" {
		t.Errorf("String = %q, want integer:-5", got)
	}
}

func TestValueEqual(t *testing.T) {
	tests := []struct {
		a, b d1.Value
		want bool
	}{
		{d1.Int(1), d1.Real(1), false},
		{d1.Real(math.NaN()), d1.Real(math.NaN()), true},
		{d1.Real(0), d1.Real(math.Copysign(0, -1)), false},
		{d1.Blob(nil), d1.Blob([]byte{}), true},
		{d1.Null(), d1.Value{}, true},
		{d1.Text(""), d1.Null(), false},
	}
	for _, tt := range tests {
		if got := tt.a.Equal(tt.b); got != tt.want {
			t.Errorf("%v.Equal(%v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestBind(t *testing.T) {
	tests := []struct {
		v          d1.Value
		wantPH     string
		wantParams []d1.Value
	}{
		{d1.Int(9007199254740993), "CAST(? AS INTEGER)", []d1.Value{d1.Text("9007199254740993")}},
		{d1.Real(2), "CAST(? AS REAL)", []d1.Value{d1.Text("2")}},
		{d1.Real(0.1), "CAST(? AS REAL)", []d1.Value{d1.Text("0.1")}},
		{d1.Real(1e22), "CAST(? AS REAL)", []d1.Value{d1.Text("1e+22")}},
		{d1.Real(0.75 * (1 << 80)), "(CAST(? AS REAL) * 134217728)", []d1.Value{d1.Text("6755399441055744")}},
		{d1.Real(1 << 200), "(CAST(? AS REAL) * 4611686018427387904 * 4611686018427387904 * 16777216)", []d1.Value{d1.Text("4503599627370496")}},
		{d1.Real(3 * math.Pow(2, -130)), "(CAST(? AS REAL) / 4611686018427387904 / 4611686018427387904 / 64)", []d1.Value{d1.Text("3")}},
		{d1.Real(math.Inf(1)), "CAST(? AS REAL)", []d1.Value{d1.Text("9e999")}},
		{d1.Real(math.NaN()), "NULL", nil},
		{d1.Text("00123"), "?", []d1.Value{d1.Text("00123")}},
		{d1.Blob([]byte{0, 0xff}), "unhex(?)", []d1.Value{d1.Text("00ff")}},
		{d1.Null(), "NULL", nil},
	}
	for _, tt := range tests {
		ph, params := d1.Bind(tt.v)
		if ph != tt.wantPH || len(params) != len(tt.wantParams) {
			t.Errorf("Bind(%v) = %q %v, want %q %v", tt.v, ph, params, tt.wantPH, tt.wantParams)
			continue
		}
		for i := range params {
			if !params[i].Equal(tt.wantParams[i]) {
				t.Errorf("Bind(%v) param %d = %v, want %v", tt.v, i, params[i], tt.wantParams[i])
			}
		}
	}
}

func TestArgs(t *testing.T) {
	var a d1.Args
	got := a.List([]d1.Value{d1.Int(1), d1.Null(), d1.Text("x")})
	if want := "CAST(? AS INTEGER), NULL, ?"; got != want {
		t.Errorf("List = %q, want %q", got, want)
	}
	if got := len(a.Params()); got != 2 {
		t.Errorf("len(Params) = %d, want 2", got)
	}
	if got := d1.QuoteIdent(`we"ird`); got != `"we""ird"` {
		t.Errorf("QuoteIdent = %s", got)
	}
}

func TestValidate(t *testing.T) {
	params := func(n int) []d1.Value {
		p := make([]d1.Value, n)
		for i := range p {
			p[i] = d1.Text("x")
		}
		return p
	}
	tests := []struct {
		name    string
		st      d1.Statement
		wantErr string
	}{
		{"ok", d1.Statement{SQL: "SELECT ?", Params: params(1)}, ""},
		{"empty", d1.Statement{SQL: "  "}, "empty statement"},
		{"begin", d1.Statement{SQL: "BEGIN TRANSACTION"}, "explicit transaction"},
		{"commit after comment", d1.Statement{SQL: "-- done\n/* x */ commit"}, "explicit transaction"},
		{"savepoint", d1.Statement{SQL: "SAVEPOINT a"}, "explicit transaction"},
		{"99 params", d1.Statement{SQL: "SELECT 1", Params: params(99)}, ""},
		{"100 params", d1.Statement{SQL: "SELECT 1", Params: params(100)}, ""},
		{"101 params", d1.Statement{SQL: "SELECT 1", Params: params(101)}, "too many bound parameters"},
		{"100000 bytes", d1.Statement{SQL: "SELECT 1 --" + strings.Repeat("x", d1.MaxStatementBytes-11)}, ""},
		{"long", d1.Statement{SQL: "SELECT 1 --" + strings.Repeat("x", d1.MaxStatementBytes)}, "statement too long"},
		{"integer", d1.Statement{SQL: "SELECT ?", Params: []d1.Value{d1.Int(1)}}, "strings only"},
		{"real", d1.Statement{SQL: "SELECT ?", Params: []d1.Value{d1.Real(0.5)}}, "strings only"},
		{"null", d1.Statement{SQL: "SELECT ?", Params: []d1.Value{d1.Null()}}, "strings only"},
		{"blob", d1.Statement{SQL: "SELECT ?", Params: []d1.Value{d1.Blob([]byte{1})}}, "d1.Args"},
		{"inf", d1.Statement{SQL: "SELECT ?", Params: []d1.Value{d1.Real(math.Inf(1))}}, "d1.Bind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d1.Validate(tt.st)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestFirstKeyword(t *testing.T) {
	tests := map[string]string{
		"select 1":                       "select",
		"  -- c\n  /* d */ WITH x AS ()": "WITH",
		";;begin":                        "begin",
		"-- only a comment":              "",
		"/* unterminated":                "",
	}
	for in, want := range tests {
		if got := d1.FirstKeyword(in); got != want {
			t.Errorf("FirstKeyword(%q) = %q, want %q", in, got, want)
		}
	}
}
