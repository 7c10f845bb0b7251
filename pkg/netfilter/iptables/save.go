package iptables

import (
	"strings"
)

// Tables is what iptables-save printed, by table name.
type Tables map[string]*Table

// Table is one table of an iptables-save: its chains and its rules in order.
type Table struct {
	Chains map[string]bool
	Rules  []Rule
}

// Rule is one "-A" line of a save.
type Rule struct {
	Chain   string
	Spec    string // the line without "-A <chain> "
	Target  string // -j
	Comment string // --comment, unquoted
}

// parseSave reads the output of iptables-save, of one table or all.
func parseSave(out string) Tables {
	tables := Tables{}
	var t *Table
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, "*"); ok {
			t = &Table{Chains: map[string]bool{}}
			tables[name] = t
			continue
		}
		if t == nil {
			continue
		}
		if name, ok := strings.CutPrefix(line, ":"); ok {
			name, _, _ = strings.Cut(name, " ")
			t.Chains[name] = true
			continue
		}
		if rest, ok := strings.CutPrefix(line, "-A "); ok {
			t.Rules = append(t.Rules, parseRule(rest))
		}
	}
	return tables
}

func parseRule(line string) Rule {
	chain, spec, _ := strings.Cut(line, " ")
	r := Rule{Chain: chain, Spec: spec}
	toks := Tokenize(spec)
	for i := 0; i+1 < len(toks); i++ {
		switch toks[i] {
		case "-j":
			r.Target = toks[i+1]
		case "--comment":
			r.Comment = toks[i+1]
		}
	}
	return r
}

// Get is the table called name; a table nobody has used yet, which the
// save does not list, is an empty one.
func (ts Tables) Get(name string) *Table {
	if t, ok := ts[name]; ok {
		return t
	}
	return &Table{Chains: map[string]bool{}}
}

// Tokenize splits a rule as iptables-restore does: on spaces, with
// double-quoted words in which a backslash escapes the next character.
func Tokenize(s string) []string {
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

// Quote is the inverse of Tokenize for one word.
func Quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// DeleteJumps returns "-D" lines for every rule that jumps to chain.
func (t *Table) DeleteJumps(chain string) []string {
	var lines []string
	for _, r := range t.Rules {
		if r.Target == chain {
			lines = append(lines, "-D "+r.Chain+" "+r.Spec)
		}
	}
	return lines
}

// RemoveChain returns the lines that delete chain and the jumps to it, or
// nothing when neither exists.
func (t *Table) RemoveChain(chain string) []string {
	jumps := t.DeleteJumps(chain)
	if !t.Chains[chain] {
		return jumps
	}
	// Declaring the chain flushes it, so -X finds it empty.
	return append(append([]string{":" + chain + " - [0:0]"}, jumps...), "-X "+chain)
}

// ChainRules lists the specs of chain's rules in order.
func (t *Table) ChainRules(chain string) []string {
	var specs []string
	for _, r := range t.Rules {
		if r.Chain == chain {
			specs = append(specs, r.Spec)
		}
	}
	return specs
}
