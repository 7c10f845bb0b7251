package cniplugin

import (
	"encoding/json"
	"errors"
	"io/fs"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/netconf"
)

// ToCNIError maps any error to the spec's error: this is the one place where
// codes are decided for errors that do not carry one.
func ToCNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	var te *types.Error // from a delegated plugin: keep its code
	if errors.As(err, &te) && !hasNetconfError(err) {
		return &types.Error{Code: te.Code, Msg: err.Error(), Details: te.Details}
	}
	var ne *netconf.Error
	if errors.As(err, &ne) {
		return &types.Error{Code: ne.Code, Msg: err.Error()}
	}
	return &types.Error{Code: codeOf(err), Msg: err.Error()}
}

func hasNetconfError(err error) bool {
	var ne *netconf.Error
	return errors.As(err, &ne)
}

func codeOf(err error) uint {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax), errors.As(err, &typ):
		return netconf.CodeDecoding
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EBUSY):
		return netconf.CodeTryAgainLater
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS),
		errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EIO), errors.Is(err, syscall.EDQUOT):
		return netconf.CodeIO
	}
	return netconf.CodeInternal
}
