package childproc

import (
	"fmt"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// Process is a started program in a process group of its own, which is killed when the process that started it
// dies (even by SIGKILL), so that no homeserver or FHIR server outlives a test binary or a development setup.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd in a new process group. onExit, if not nil, runs after the program has exited and before Done is
// closed (e.g. to close its log file).
//
// Pdeathsig kills the program when the thread that started it ends; Start keeps that thread locked (and so alive)
// for as long as the program runs, so only the death of this process triggers it.
func Start(cmd *exec.Cmd, onExit func()) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr.Setpgid = true
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 2 * time.Second
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		if onExit != nil {
			onExit()
		}
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("failed to start %s: %w", cmd.Path, err)
	}
	return p, nil
}

// Done is closed once the program has exited and its output is flushed.
func (p *Process) Done() <-chan struct{} {
	return p.done
}

// Err is the program's exit error; call it only after Done is closed.
func (p *Process) Err() error {
	return p.err
}

// Pid is the program's process ID (also its process group ID).
func (p *Process) Pid() int {
	return p.cmd.Process.Pid
}

// Signal sends sig to the program's process group, unless it has exited.
func (p *Process) Signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

// Kill ends the program at once (SIGKILL), as a crash would, and waits until it has exited.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop asks the program to end (SIGTERM) and kills it if it has not exited within timeout. It reports whether it
// had to kill.
func (p *Process) Stop(timeout time.Duration) (killed bool) {
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false
	case <-time.After(timeout):
		p.Kill()
		return true
	}
}
