package plan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrNotStrict means a plan or approval file is not exactly one JSON object without
// duplicate keys. encoding/json keeps the last of two equal keys (and matches keys without
// regard to case), so a duplicate could show a reviewer one value and give the program
// another.
var ErrNotStrict = errors.New("plan file is not strict JSON")

// checkStrict refuses duplicate keys (compared as encoding/json matches them, ignoring case)
// in any object, and anything after the top-level value.
func checkStrict(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := strictValue(dec, "$"); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the top-level object", ErrNotStrict)
	}
	return nil
}

func strictValue(dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotStrict, path, err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch d {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrNotStrict, path, err)
			}
			k, _ := kt.(string)
			fold := strings.ToLower(k)
			if seen[fold] {
				return fmt.Errorf("%w: duplicate key %q in %s", ErrNotStrict, k, path)
			}
			seen[fold] = true
			if err := strictValue(dec, path+"."+k); err != nil {
				return err
			}
		}
	case '[':
		for i := 0; dec.More(); i++ {
			if err := strictValue(dec, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return fmt.Errorf("%w: %s: %v", ErrNotStrict, path, err)
	}
	return nil
}
