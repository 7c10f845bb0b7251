package nat

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// natTable is what iptables-save printed for the nat table.
type natTable struct {
	chains map[string]bool
	rules  []rule
}

type rule struct {
	chain   string
	spec    string // the line without "-A <chain> "
	target  string // -j
	comment string // --comment, unquoted
}

func parseSave(out string) *natTable {
	t := &natTable{chains: map[string]bool{}}
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, ":"); ok {
			name, _, _ = strings.Cut(name, " ")
			t.chains[name] = true
			continue
		}
		rest, ok := strings.CutPrefix(line, "-A ")
		if !ok {
			continue
		}
		chain, spec, _ := strings.Cut(rest, " ")
		r := rule{chain: chain, spec: spec}
		toks := tokenize(spec)
		for i := 0; i+1 < len(toks); i++ {
			switch toks[i] {
			case "-j":
				r.target = toks[i+1]
			case "--comment":
				r.comment = toks[i+1]
			}
		}
		t.rules = append(t.rules, r)
	}
	return t
}

// tokenize splits a rule as iptables-restore does: on spaces, with
// double-quoted words in which a backslash escapes the next character.
func tokenize(s string) []string {
	var toks []string
	var cur strings.Builder
	inQuote, escaped, started := false, false, false
	for i := 0; i < len(s); i++ { // bytes, not runes: a comment need not be UTF-8
		r := s[i]
		switch {
		case escaped:
			cur.WriteByte(r)
			escaped = false
		case inQuote && r == '\\':
			escaped = true
		case r == '"':
			inQuote, started = !inQuote, true
		case r == ' ' && !inQuote:
			if started {
				toks = append(toks, cur.String())
			}
			cur.Reset()
			started = false
		default:
			cur.WriteByte(r)
			started = true
		}
	}
	if started {
		toks = append(toks, cur.String())
	}
	return toks
}

// quote is the inverse of tokenize for one word.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// deleteJumps returns "-D" lines for every rule that jumps to chain.
func (t *natTable) deleteJumps(chain string) []string {
	var lines []string
	for _, r := range t.rules {
		if r.target == chain {
			lines = append(lines, "-D "+r.chain+" "+r.spec)
		}
	}
	return lines
}

// removeChain returns the lines that delete chain and the jumps to it, or
// nothing when neither exists.
func (t *natTable) removeChain(chain string) []string {
	jumps := t.deleteJumps(chain)
	if !t.chains[chain] {
		return jumps
	}
	// Declaring the chain flushes it, so -X finds it empty.
	return append(append([]string{":" + chain + " - [0:0]"}, jumps...), "-X "+chain)
}

var commentRE = regexp.MustCompile(`^name: ("(?:[^"\\]|\\.)*") id: ("(?:[^"\\]|\\.)*")$`)

// ParseComment reads back a Comment.
func ParseComment(c string) (network, containerID string, ok bool) {
	m := commentRE.FindStringSubmatch(c)
	if m == nil {
		return "", "", false
	}
	n, err1 := strconv.Unquote(m[1])
	id, err2 := strconv.Unquote(m[2])
	return n, id, err1 == nil && err2 == nil
}

// staleChains lists, sorted, the chains of network whose container is not valid.
func (t *natTable) staleChains(network string, valid map[string]bool) []string {
	stale := map[string]bool{}
	for _, r := range t.rules {
		n, id, ok := ParseComment(r.comment)
		if !ok || n != network || valid[id] || r.chain != ChainName(n, id) {
			continue
		}
		stale[r.chain] = true
	}
	out := make([]string, 0, len(stale))
	for c := range stale {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}
