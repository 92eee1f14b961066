package d1

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// Kind is the SQLite storage class of a value.
type Kind string

// The five SQLite storage classes.
const (
	KindNull    Kind = "null"
	KindInteger Kind = "integer"
	KindReal    Kind = "real"
	KindText    Kind = "text"
	KindBlob    Kind = "blob"
)

// Value is one SQLite value with its storage class. Only the field that
// matches Kind is meaningful. Values round-trip exactly through JSON,
// including integers beyond 2^53, text that looks like a number and blobs.
type Value struct {
	Kind Kind
	Int  int64
	Real float64
	Text string
	Blob []byte
}

// Null returns the SQL NULL value.
func Null() Value { return Value{Kind: KindNull} }

// Int returns an INTEGER value.
func Int(i int64) Value { return Value{Kind: KindInteger, Int: i} }

// Real returns a REAL value.
func Real(f float64) Value { return Value{Kind: KindReal, Real: f} }

// Text returns a TEXT value.
func Text(s string) Value { return Value{Kind: KindText, Text: s} }

// Blob returns a BLOB value; nil is stored as an empty blob, not NULL.
func Blob(b []byte) Value {
	if b == nil {
		b = []byte{}
	}
	return Value{Kind: KindBlob, Blob: b}
}

// IsNull reports whether v is NULL (the zero Value counts as NULL).
func (v Value) IsNull() bool { return v.Kind == KindNull || v.Kind == "" }

// String renders v with its kind, e.g. "integer:42", "text:00123",
// "blob:00ff", "null". Distinct values give distinct strings, so it is usable
// as a map key.
func (v Value) String() string {
	switch v.Kind {
	case KindInteger:
		return "integer:" + strconv.FormatInt(v.Int, 10)
	case KindReal:
		return "real:" + formatReal(v.Real)
	case KindText:
		return "text:" + v.Text
	case KindBlob:
		return "blob:" + hex.EncodeToString(v.Blob)
	default:
		return "null"
	}
}

// Equal reports whether a and b have the same kind and the same value. Reals
// compare by bit pattern, so NaN equals NaN and 0 differs from -0.
func (v Value) Equal(o Value) bool {
	if v.IsNull() || o.IsNull() {
		return v.IsNull() && o.IsNull()
	}
	if v.Kind != o.Kind {
		return false
	}
	switch v.Kind {
	case KindInteger:
		return v.Int == o.Int
	case KindReal:
		return math.Float64bits(v.Real) == math.Float64bits(o.Real)
	case KindText:
		return v.Text == o.Text
	case KindBlob:
		return bytes.Equal(v.Blob, o.Blob)
	}
	return false
}

// formatReal gives the shortest text that parses back to the same float64,
// including "+Inf", "-Inf" and "NaN".
func formatReal(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// jsonValue is the wire form of Value in plans and backups.
type jsonValue struct {
	Type     Kind    `json:"type"`
	Value    *string `json:"value,omitempty"`
	Encoding string  `json:"encoding,omitempty"`
}

// MarshalJSON encodes v as {"type":"integer","value":"9007199254740993"}.
// Integers and reals are strings so no JSON reader can round them; blobs
// are base64; text that is not valid UTF-8 is base64 with
// "encoding":"base64"; NULL is {"type":"null"}.
func (v Value) MarshalJSON() ([]byte, error) {
	var s string
	j := jsonValue{Type: v.Kind}
	switch v.Kind {
	case KindInteger:
		s = strconv.FormatInt(v.Int, 10)
	case KindReal:
		s = formatReal(v.Real)
	case KindText:
		s = v.Text
		if !utf8.ValidString(s) {
			s = base64.StdEncoding.EncodeToString([]byte(s))
			j.Encoding = "base64"
		}
	case KindBlob:
		s = base64.StdEncoding.EncodeToString(v.Blob)
	case KindNull, "":
		j.Type = KindNull
		return json.Marshal(j)
	default:
		return nil, fmt.Errorf("marshal value: unknown kind %q", v.Kind)
	}
	j.Value = &s
	return json.Marshal(j)
}

// UnmarshalJSON decodes the form written by MarshalJSON.
func (v *Value) UnmarshalJSON(b []byte) error {
	var j jsonValue
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("unmarshal value: %w", err)
	}
	if j.Type == KindNull {
		*v = Null()
		return nil
	}
	if j.Value == nil {
		return fmt.Errorf("unmarshal value: %s value without \"value\"", j.Type)
	}
	s := *j.Value
	switch j.Type {
	case KindInteger:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("unmarshal integer value: %w", err)
		}
		*v = Int(i)
	case KindReal:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("unmarshal real value: %w", err)
		}
		*v = Real(f)
	case KindText:
		switch j.Encoding {
		case "":
			*v = Text(s)
		case "base64":
			raw, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return fmt.Errorf("unmarshal text value: %w", err)
			}
			*v = Text(string(raw))
		default:
			return fmt.Errorf("unmarshal text value: unknown encoding %q", j.Encoding)
		}
	case KindBlob:
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return fmt.Errorf("unmarshal blob value: %w", err)
		}
		*v = Blob(raw)
	default:
		return fmt.Errorf("unmarshal value: unknown type %q", j.Type)
	}
	return nil
}

// FromGo converts a value scanned by database/sql from SQLite (int64,
// float64, string, []byte or nil) into a Value.
func FromGo(x any) (Value, error) {
	switch t := x.(type) {
	case nil:
		return Null(), nil
	case int64:
		return Int(t), nil
	case float64:
		return Real(t), nil
	case string:
		return Text(t), nil
	case []byte:
		return Blob(bytes.Clone(t)), nil
	case bool:
		if t {
			return Int(1), nil
		}
		return Int(0), nil
	default:
		return Value{}, fmt.Errorf("unsupported sqlite value of type %T", x)
	}
}

// Go returns v as the Go value database/sql binds for SQLite.
func (v Value) Go() any {
	switch v.Kind {
	case KindInteger:
		return v.Int
	case KindReal:
		return v.Real
	case KindText:
		return v.Text
	case KindBlob:
		if v.Blob == nil {
			return []byte{}
		}
		return v.Blob
	default:
		return nil
	}
}
