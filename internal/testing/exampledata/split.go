package exampledata

import (
	"fmt"
	"strings"
)

// SplitSQL splits a script into statements at semicolons outside string literals, quoted
// identifiers and comments. Inside CREATE TRIGGER a semicolon ends the statement only right
// after the word END, as sqlite3_complete decides. Statements with nothing but comments are
// dropped; the returned statements have no trailing semicolon.
func SplitSQL(script string) ([]string, error) {
	var (
		out       []string
		start     int
		words     []string // the first words of the statement, upper case
		lastWord  string   // the word right before the current position, "" after other tokens
		hasCode   bool
		isTrigger bool
	)
	line := func(pos int) int { return strings.Count(script[:pos], "\n") + 1 }
	for i := 0; i < len(script); {
		c := script[i]
		switch {
		case c == '-' && strings.HasPrefix(script[i:], "--"):
			end := strings.IndexByte(script[i:], '\n')
			if end < 0 {
				i = len(script)
			} else {
				i += end + 1
			}
		case c == '/' && strings.HasPrefix(script[i:], "/*"):
			end := strings.Index(script[i+2:], "*/")
			if end < 0 {
				return nil, fmt.Errorf("line %d: unterminated comment", line(i))
			}
			i += 2 + end + 2
		case c == '\'' || c == '"' || c == '`' || c == '[':
			closer := c
			if c == '[' {
				closer = ']'
			}
			j := i + 1
			for {
				k := strings.IndexByte(script[j:], closer)
				if k < 0 {
					return nil, fmt.Errorf("line %d: unterminated %c", line(i), c)
				}
				j += k + 1
				// A doubled quote is an escaped quote; brackets have no escape.
				if c != '[' && j < len(script) && script[j] == closer {
					j++
					continue
				}
				break
			}
			i = j
			hasCode, lastWord = true, ""
		case isWordByte(c):
			j := i
			for j < len(script) && isWordByte(script[j]) {
				j++
			}
			w := strings.ToUpper(script[i:j])
			if len(words) < 3 {
				words = append(words, w)
				isTrigger = isCreateTrigger(words)
			}
			hasCode, lastWord = true, w
			i = j
		case c == ';':
			i++
			if isTrigger && lastWord != "END" {
				lastWord = ""
				continue
			}
			if hasCode {
				out = append(out, strings.TrimSpace(script[start:i-1]))
			}
			start, words, lastWord, hasCode, isTrigger = i, nil, "", false, false
		default:
			if c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v' {
				hasCode, lastWord = true, ""
			}
			i++
		}
	}
	if hasCode {
		if isTrigger {
			at := len(script) - len(strings.TrimLeft(script[start:], " \t\r\n\f\v"))
			return nil, fmt.Errorf("line %d: CREATE TRIGGER without END;", line(at))
		}
		out = append(out, strings.TrimSpace(script[start:]))
	}
	return out, nil
}

func isCreateTrigger(words []string) bool {
	if len(words) < 2 || words[0] != "CREATE" {
		return false
	}
	if words[1] == "TRIGGER" {
		return true
	}
	return len(words) == 3 && (words[1] == "TEMP" || words[1] == "TEMPORARY") && words[2] == "TRIGGER"
}

// isWordByte reports bytes of SQLite identifiers and keywords (non-ASCII counts as letter).
func isWordByte(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}
