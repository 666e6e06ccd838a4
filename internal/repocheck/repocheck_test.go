package repocheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// root is the repository's top directory.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", dir, err)
	}
	return dir
}

// packages maps every directory holding non-test Go files to those files,
// skipping generated code and npm's node_modules.
func packages(t *testing.T) map[string][]string {
	t.Helper()
	top := root(t)
	out := map[string][]string{}
	err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "node_modules", "testdata", ".git":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(top, path)
		if strings.HasPrefix(rel, "proto"+string(filepath.Separator)) {
			return nil // generated
		}
		out[filepath.Dir(rel)] = append(out[filepath.Dir(rel)], path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Every library package says in a doc.go what it owns and what it must not
// touch; a command's package comment sits on its main file.
func TestEveryPackageHasADocComment(t *testing.T) {
	for dir, files := range packages(t) {
		fset := token.NewFileSet()
		documented, isMain := false, false
		for _, f := range files {
			file, err := parser.ParseFile(fset, f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			isMain = isMain || file.Name.Name == "main"
			documented = documented || file.Doc != nil
		}
		_, err := os.Stat(filepath.Join(root(t), dir, "doc.go"))
		switch {
		case !documented:
			t.Errorf("%s: no package comment", dir)
		case !isMain && err != nil:
			t.Errorf("%s: no doc.go saying what the package owns", dir)
		}
	}
}

// Every exported name has a doc comment.
func TestExportedNamesAreDocumented(t *testing.T) {
	for _, files := range packages(t) {
		for _, f := range files {
			fset := token.NewFileSet()
			file, err := parser.ParseFile(fset, f, nil, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			for _, decl := range file.Decls {
				for _, name := range undocumented(decl) {
					t.Errorf("%s: exported %s has no doc comment", fset.Position(decl.Pos()), name)
				}
			}
		}
	}
}

// undocumented lists the exported names a declaration leaves without a doc
// comment. Methods count only on exported types; a group's comment covers
// its members.
func undocumented(decl ast.Decl) []string {
	var out []string
	switch d := decl.(type) {
	case *ast.FuncDecl:
		if !d.Name.IsExported() || d.Doc != nil {
			return nil
		}
		if d.Recv != nil && !receiverExported(d.Recv) {
			return nil
		}
		out = append(out, d.Name.Name)
	case *ast.GenDecl:
		if d.Tok == token.IMPORT {
			return nil
		}
		for _, spec := range d.Specs {
			switch s := spec.(type) {
			case *ast.TypeSpec:
				if s.Name.IsExported() && d.Doc == nil && s.Doc == nil {
					out = append(out, s.Name.Name)
				}
			case *ast.ValueSpec:
				for _, n := range s.Names {
					if n.IsExported() && d.Doc == nil && s.Doc == nil && s.Comment == nil {
						out = append(out, n.Name)
					}
				}
			}
		}
	}
	return out
}

func receiverExported(recv *ast.FieldList) bool {
	if len(recv.List) == 0 {
		return false
	}
	t := recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if g, ok := t.(*ast.IndexExpr); ok {
		t = g.X
	}
	id, ok := t.(*ast.Ident)
	return ok && id.IsExported()
}
