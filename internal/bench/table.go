package bench

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Row is one line of the results table.
type Row struct {
	// ID is the measurement's number in BENCHMARKS.md (1 to 7).
	ID string
	// What is measured, with its sizes.
	What string
	// Killfeed is killfeed's result; Reference the reference's, measured in
	// the same run; Ratio compares them.
	Killfeed, Reference, Ratio string
	// Target is the goal, and Met says whether it was reached ("yes",
	// "NO", or empty when the row has no target).
	Target, Met string
	// Note adds detail printed under the table.
	Note string
}

var header = Row{ID: "#", What: "Measurement", Killfeed: "killfeed", Reference: "Reference (same run)", Ratio: "Ratio", Target: "Target", Met: "Met"}

func (r Row) cells() []string {
	return []string{r.ID, r.What, r.Killfeed, r.Reference, r.Ratio, r.Target, r.Met}
}

// WriteText writes rows as an aligned plain-text table, then their notes.
func WriteText(w io.Writer, rows []Row) error {
	all := append([]Row{header}, rows...)
	width := make([]int, len(header.cells()))
	for _, r := range all {
		for i, c := range r.cells() {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for n, r := range all {
		for i, c := range r.cells() {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c)
			if i < len(width)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)))
			}
		}
		b.WriteString("\n")
		if n == 0 {
			total := len(width)*2 - 2
			for _, x := range width {
				total += x
			}
			b.WriteString(strings.Repeat("-", total) + "\n")
		}
	}
	writeNotes(&b, rows)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMarkdown writes rows as a Markdown table, then their notes.
func WriteMarkdown(w io.Writer, rows []Row) error {
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + strings.ReplaceAll(c, "|", `\|`) + " |")
		}
		b.WriteString("\n")
	}
	line(header.cells())
	b.WriteString("|---|---|--:|--:|--:|---|---|\n")
	for _, r := range rows {
		line(r.cells())
	}
	writeNotes(&b, rows)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeNotes(b *strings.Builder, rows []Row) {
	first := true
	for _, r := range rows {
		if r.Note == "" {
			continue
		}
		if first {
			b.WriteString("\n")
			first = false
		}
		fmt.Fprintf(b, "- %s %s: %s\n", r.ID, r.What, r.Note)
	}
}
