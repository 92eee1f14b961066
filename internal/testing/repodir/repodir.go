// Package repodir finds the repository from a test's working directory, for the files it
// holds (.tools, installed by scripts/ensure-deps.sh, and test scripts).
package repodir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Root walks up from the working directory (a package folder under go test) to the folder
// holding go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repository folder: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository folder: no go.mod above the working directory")
		}
		dir = parent
	}
}
