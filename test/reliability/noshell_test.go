package reliability

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// shells are the programs that would reinterpret their arguments.
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "zsh": true, "ash": true, "ksh": true}

// shellCalls returns where src starts a process through a shell: a call to
// exec.Command, exec.CommandContext, syscall.Exec or os.StartProcess with a
// literal shell among its arguments (the program, or argv[0] of a slice).
// Non-literal programs are the suite's own choices (plugins from CNI_PATH,
// iptables-restore, subnetd-etcd), never user data.
func shellCalls(fset *token.FileSet, file *ast.File) []string {
	var found []string
	ast.Inspect(file, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || !startsProcess(call.Fun) {
			return true
		}
		for _, arg := range call.Args {
			if lit := literal(arg); shells[filepath.Base(lit)] {
				found = append(found, fset.Position(call.Pos()).String())
				break
			}
		}
		return true
	})
	return found
}

func startsProcess(fun ast.Expr) bool {
	sel, ok := fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	if !ok {
		return false
	}
	switch pkg.Name + "." + sel.Sel.Name {
	case "exec.Command", "exec.CommandContext", "syscall.Exec", "os.StartProcess", "unix.Exec":
		return true
	}
	return false
}

// literal is the value of a string literal, also inside a []string{...}.
func literal(e ast.Expr) string {
	switch v := e.(type) {
	case *ast.BasicLit:
		if s, err := strconv.Unquote(v.Value); err == nil {
			return s
		}
	case *ast.CompositeLit:
		if len(v.Elts) > 0 {
			return literal(v.Elts[0])
		}
	}
	return ""
}

// TestShellDetector proves the scanner finds what TestNoShell forbids.
func TestShellDetector(t *testing.T) {
	cases := []struct {
		src  string
		want int
	}{
		{`exec.Command("sh", "-c", "ip link del " + name)`, 1},
		{`exec.CommandContext(ctx, "/bin/bash", "-c", s)`, 1},
		{`syscall.Exec("/bin/sh", []string{"sh", "-c", s}, env)`, 1},
		{`os.StartProcess("/usr/bin/dash", args, attr)`, 1},
		{`exec.Command("ip", "link", "del", name)`, 0},
		{`exec.CommandContext(ctx, name, args...)`, 0},
		{`fmt.Println("sh")`, 0},
	}
	for _, c := range cases {
		fset := token.NewFileSet()
		file, err := parser.ParseFile(fset, "x.go", "package x\nfunc f() { "+c.src+" }", 0)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		if got := len(shellCalls(fset, file)); got != c.want {
			t.Errorf("%s: %d shell calls found, want %d", c.src, got, c.want)
		}
	}
}

// TestNoShell: no non-test Go code of the tree runs a command through a
// shell, so no user data (network names, container IDs, ifnames, host IPs)
// can ever be interpreted as shell syntax.
func TestNoShell(t *testing.T) {
	root := repoRoot(t)
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		for _, pos := range shellCalls(fset, file) {
			t.Errorf("%s starts a shell: run the program directly with its arguments", pos)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("scanned only %d Go files under %s: the walk missed the tree", files, root)
	}
}
