package d1

import "strings"

// token is one word or placeholder of a statement, outside string literals,
// quoted identifiers and comments.
type token struct {
	text        string
	placeholder bool
}

// tokens splits sql into words and placeholders the way SQLite's tokenizer
// sees them, skipping '...' literals, "..." `...` [...] identifiers and
// comments. Other punctuation is dropped.
func tokens(sql string) []token {
	var out []token
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			i = skipQuoted(sql, i, c)
		case c == '[':
			if j := strings.IndexByte(sql[i:], ']'); j >= 0 {
				i += j + 1
			} else {
				i = len(sql)
			}
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = len(sql)
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			if j := strings.Index(sql[i+2:], "*/"); j >= 0 {
				i += j + 4
			} else {
				i = len(sql)
			}
		case c == '?':
			j := i + 1
			for j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
				j++
			}
			out = append(out, token{text: sql[i:j], placeholder: true})
			i = j
		case (c == ':' || c == '@' || c == '$') && i+1 < len(sql) && isWordByte(sql[i+1]):
			j := i + 1
			for j < len(sql) && isWordByte(sql[j]) {
				j++
			}
			out = append(out, token{text: sql[i:j], placeholder: true})
			i = j
		case isWordByte(c):
			j := i
			for j < len(sql) && isWordByte(sql[j]) {
				j++
			}
			out = append(out, token{text: sql[i:j]})
			i = j
		default:
			i++
		}
	}
	return out
}

func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// skipQuoted returns the index after the quoted run starting at i; a doubled
// quote stays inside.
func skipQuoted(sql string, i int, q byte) int {
	for j := i + 1; j < len(sql); j++ {
		if sql[j] == q {
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(sql)
}

// Placeholders returns how many parameters sql binds: the number of
// anonymous "?" plus the highest "?NNN", as sqlite3_bind_parameter_count
// counts them (named parameters count once each).
func Placeholders(sql string) int {
	n := 0
	named := map[string]bool{}
	for _, t := range tokens(sql) {
		if !t.placeholder {
			continue
		}
		switch {
		case t.text == "?":
			n++
		case t.text[0] == '?':
			k := 0
			for _, d := range t.text[1:] {
				k = k*10 + int(d-'0')
				if k > 1<<20 {
					break
				}
			}
			n = max(n, k)
		case !named[t.text]:
			named[t.text] = true
			n++
		}
	}
	return n
}

// HasKeyword reports whether sql has word (case-insensitive) outside
// literals, quoted identifiers and comments.
func HasKeyword(sql, word string) bool {
	for _, t := range tokens(sql) {
		if !t.placeholder && strings.EqualFold(t.text, word) {
			return true
		}
	}
	return false
}
