// Package repocheck holds tests that keep the repository's conventions:
// every package says what it owns in a doc.go, and every exported name has
// a doc comment. It has no code; nothing may import it.
package repocheck
