package qmpserver

import "fmt"

// Error classes QEMU uses in error replies. New commands should use
// ClassGenericError; the others exist for the QEMU commands that report them.
const (
	ClassGenericError    = "GenericError"
	ClassCommandNotFound = "CommandNotFound"
	ClassDeviceNotActive = "DeviceNotActive"
	ClassDeviceNotFound  = "DeviceNotFound"
	ClassKVMMissingCap   = "KVMMissingCap"
)

// Error is a QMP error reply: {"error": {"class": Class, "desc": Desc}}.
//
// A Handler that returns an *Error (possibly wrapped) has its class reported; any
// other error is reported as a GenericError with err.Error() as description.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

// Error returns the description, the part meant for people.
func (e *Error) Error() string { return e.Desc }

// GenericError returns an *Error of class GenericError, the class of nearly every
// QEMU error, with a description formatted as by fmt.Sprintf.
func GenericError(format string, args ...any) *Error {
	return &Error{Class: ClassGenericError, Desc: fmt.Sprintf(format, args...)}
}

// CommandNotFound returns the error QEMU replies for a command it does not have.
func CommandNotFound(name string) *Error {
	return &Error{Class: ClassCommandNotFound, Desc: fmt.Sprintf("The command %s has not been found", name)}
}
