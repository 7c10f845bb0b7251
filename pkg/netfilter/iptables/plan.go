package iptables

// Plan turns what iptables-save showed of one table into the lines of one
// restore. It deletes rules by their exact text and creates chains with
// -N, never flushing a chain someone else may be writing to: a rule
// another process deleted, or a chain it created, since the read makes
// the restore fail as a whole, and the caller reads again and plans anew.
type Plan struct {
	T     *Table
	Lines []string
	gone  []bool // rules of T deleted by the plan
}

// NewPlan starts a plan over t, which it updates as it plans.
func NewPlan(t *Table) *Plan {
	return &Plan{T: t, gone: make([]bool, len(t.Rules))}
}

// Emit adds a line.
func (p *Plan) Emit(line string) { p.Lines = append(p.Lines, line) }

// Live returns the indexes of the rules not deleted yet that match keep.
func (p *Plan) Live(keep func(Rule) bool) []int {
	var out []int
	for i, r := range p.T.Rules {
		if !p.gone[i] && keep(r) {
			out = append(out, i)
		}
	}
	return out
}

// Del deletes rule i by its text.
func (p *Plan) Del(i int) {
	r := p.T.Rules[i]
	p.gone[i] = true
	p.Emit("-D " + r.Chain + " " + r.Spec)
}

// Append adds a rule at the end of chain.
func (p *Plan) Append(chain, spec string) { p.Emit("-A " + chain + " " + spec) }

// EnsureChain creates chain with -N unless the read listed it, and reports
// whether it did. -N fails (and aborts the transaction) if another process
// created the chain since the read, where a ":chain" declaration would
// flush it.
func (p *Plan) EnsureChain(c string) bool {
	if p.T.Chains[c] {
		return false
	}
	p.T.Chains[c] = true
	p.Emit("-N " + c)
	return true
}

// InChain and JumpsTo are the common filters of Live.
func InChain(c string) func(Rule) bool { return func(r Rule) bool { return r.Chain == c } }

// JumpsTo matches the rules whose target is chain.
func JumpsTo(c string) func(Rule) bool { return func(r Rule) bool { return r.Target == c } }
