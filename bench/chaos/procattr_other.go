//go:build unix && !linux

package main

import "syscall"

// procAttr puts a child in its own process group, so a kill reaches all of it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
