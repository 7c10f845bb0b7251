package dhcpclient

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"reflect"
	"slices"
)

// This file speaks the part of encoding/gob's wire format (its package doc,
// "Encoding Details") that net/rpc's calls to the daemon carry. It is
// written here because encoding/gob's package init costs ~0.5 ms, which
// every interface plugin linking this package would pay at each start.
// Encoding covers flat structs of strings, byte slices and integers (the
// requests); decoding covers any value but interfaces, into Go values
// matched by field name as gob does (the headers and a current.Result).

// The type ids every gob stream knows; a stream's own types start at 65.
const (
	idBool      = 1
	idInt       = 2
	idUint      = 3
	idFloat     = 4
	idBytes     = 5
	idString    = 6
	idComplex   = 7
	idInterface = 8
	firstUserID = 65
)

// Bounds on what the daemon may send: its answers are a few hundred bytes.
const (
	maxMessage = 1 << 20
	maxDepth   = 64
)

var errGob = errors.New("malformed gob stream")

// wireType is a type the stream defined: a struct's fields, or the element
// (and key) of a slice, array or map; a GobEncoder's value is its bytes.
type wireType struct {
	kind      wireKind
	fields    []wireField
	elem, key int
}

type wireKind int

const (
	kindArray wireKind = iota // the order of wireType's fields in gob
	kindSlice
	kindStruct
	kindMap
	kindEncoder
)

type wireField struct {
	name string
	id   int
}

// gobEncoder writes values into messages, defining each struct type on first use.
type gobEncoder struct {
	ids map[reflect.Type]int
}

// encode appends the messages of v, a pointer to a flat struct, to out.
func (e *gobEncoder) encode(out []byte, v any) ([]byte, error) {
	rv := reflect.Indirect(reflect.ValueOf(v))
	t := rv.Type()
	id, ok := e.ids[t]
	if !ok {
		if e.ids == nil {
			e.ids = map[reflect.Type]int{}
		}
		id = firstUserID + len(e.ids)
		def, err := define(t, id)
		if err != nil {
			return nil, err
		}
		e.ids[t] = id
		out = appendMessage(out, def)
	}
	msg := appendInt(nil, int64(id))
	last := -1
	for i := range t.NumField() {
		f := rv.Field(i)
		if f.IsZero() || (f.Kind() == reflect.Slice && f.Len() == 0) {
			continue // gob sends no zero field, nor an empty slice
		}
		msg = appendUint(msg, uint64(i-last))
		last = i
		switch f.Kind() {
		case reflect.String:
			msg = appendBytes(msg, []byte(f.String()))
		case reflect.Slice:
			msg = appendBytes(msg, f.Bytes())
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			msg = appendInt(msg, f.Int())
		default:
			msg = appendUint(msg, f.Uint())
		}
	}
	return appendMessage(out, append(msg, 0)), nil
}

// define is the message defining the struct type t as id: a wireType
// whose StructT (its field 2) lists the fields.
func define(t reflect.Type, id int) ([]byte, error) {
	b := appendInt(nil, -int64(id))
	b = append(b, 3, 1, 1) // wireType.StructT, structType.CommonType, CommonType.Name
	b = appendBytes(b, []byte(t.Name()))
	b = append(b, 1) // CommonType.Id
	b = appendInt(b, int64(id))
	b = append(b, 0, 1) // end of CommonType; structType.Field
	b = appendUint(b, uint64(t.NumField()))
	for i := range t.NumField() {
		f := t.Field(i)
		fid, err := fieldID(f.Type)
		if err != nil || !f.IsExported() {
			return nil, fmt.Errorf("gob: field %s.%s cannot be sent", t.Name(), f.Name)
		}
		b = append(b, 1) // fieldType.Name
		b = appendBytes(b, []byte(f.Name))
		b = append(b, 1) // fieldType.Id
		b = appendInt(b, int64(fid))
		b = append(b, 0)
	}
	return append(b, 0, 0), nil // end of structType, of wireType
}

func fieldID(t reflect.Type) (int, error) {
	switch t.Kind() {
	case reflect.String:
		return idString, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return idBytes, nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return idInt, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return idUint, nil
	}
	return 0, errGob
}

// appendUint is gob's unsigned integer: below 128 one byte, else the
// negated byte count and the big-endian bytes.
func appendUint(b []byte, x uint64) []byte {
	if x < 0x80 {
		return append(b, byte(x))
	}
	n := (bits.Len64(x) + 7) / 8
	b = append(b, byte(-n))
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(x>>(8*i)))
	}
	return b
}

// appendInt is gob's signed integer: bit 0 says to complement the rest.
func appendInt(b []byte, x int64) []byte {
	if x < 0 {
		return appendUint(b, uint64(^x)<<1|1)
	}
	return appendUint(b, uint64(x)<<1)
}

func appendBytes(b, s []byte) []byte { return append(appendUint(b, uint64(len(s))), s...) }

func appendMessage(out, msg []byte) []byte { return append(appendUint(out, uint64(len(msg))), msg...) }

// gobDecoder reads values from a stream, keeping the types it defines.
type gobDecoder struct {
	r     *bufio.Reader
	types map[int]*wireType
}

// decode reads the next value into v, a pointer, or skips it when v is nil.
func (d *gobDecoder) decode(v any) error {
	target := reflect.Value{}
	if v != nil {
		target = reflect.ValueOf(v).Elem()
	}
	for {
		b, err := d.message()
		if err != nil {
			return err
		}
		m := &gobBuf{b: b}
		id := m.int()
		if id >= 0 {
			d.top(m, int(min(id, math.MaxInt32)), target)
			return m.err
		}
		if id < -math.MaxInt32 || -id <= idInterface || d.types[int(-id)] != nil {
			return fmt.Errorf("%w: type id %d defined", errGob, -id)
		}
		w := m.wireType()
		if m.err == nil && len(m.b) > 0 {
			m.err = errGob
		}
		if m.err != nil {
			return m.err
		}
		if d.types == nil {
			d.types = map[int]*wireType{}
		}
		d.types[int(-id)] = w
	}
}

// message reads the next count-delimited message.
func (d *gobDecoder) message() ([]byte, error) {
	c, err := d.r.ReadByte()
	if err != nil {
		return nil, err
	}
	n := uint64(c)
	if c >= 0x80 {
		var buf [8]byte
		k := 256 - int(c) // the byte count, negated
		if k > 8 {
			return nil, errGob
		}
		if _, err := io.ReadFull(d.r, buf[8-k:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(buf[:])
	}
	if n > maxMessage {
		return nil, fmt.Errorf("%w: a message of %d bytes", errGob, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// top decodes a message's value: a struct as it is, any other type as a
// struct of one field, hence after a zero delta.
func (d *gobDecoder) top(m *gobBuf, id int, v reflect.Value) {
	if w := d.types[id]; (w == nil || w.kind != kindStruct) && m.uint() != 0 {
		m.fail()
	}
	d.value(m, id, v, 0)
}

// value decodes a value of wire type id into v; an invalid v skips it.
func (d *gobDecoder) value(m *gobBuf, id int, v reflect.Value, depth int) {
	if depth > maxDepth {
		m.fail()
		return
	}
	for v.IsValid() && v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	switch id {
	case idBool:
		x := m.uint()
		m.set(v, reflect.Bool, func() { v.SetBool(x != 0) })
	case idInt:
		x := m.int()
		m.set(v, reflect.Int, func() {
			if v.OverflowInt(x) {
				m.fail()
				return
			}
			v.SetInt(x)
		})
	case idUint:
		x := m.uint()
		m.set(v, reflect.Uint, func() {
			if v.OverflowUint(x) {
				m.fail()
				return
			}
			v.SetUint(x)
		})
	case idFloat:
		x := m.float()
		m.set(v, reflect.Float64, func() { v.SetFloat(x) })
	case idComplex:
		re, im := m.float(), m.float()
		m.set(v, reflect.Complex128, func() { v.SetComplex(complex(re, im)) })
	case idBytes, idString:
		x := m.bytes()
		m.set(v, reflect.String, func() {
			if v.Kind() == reflect.String {
				v.SetString(string(x))
			} else {
				v.SetBytes(nil) // empty stays nil, as with gob
				if len(x) > 0 {
					v.SetBytes(slices.Clone(x))
				}
			}
		})
	default:
		d.composite(m, id, v, depth)
	}
}

// composite decodes a value of a type the stream defined.
func (d *gobDecoder) composite(m *gobBuf, id int, v reflect.Value, depth int) {
	w := d.types[id]
	if w == nil {
		m.fail() // an interface, or a type never defined
		return
	}
	switch w.kind {
	case kindStruct:
		if v.IsValid() && v.Kind() != reflect.Struct {
			m.fail()
			return
		}
		m.fields(func(n int) {
			if n >= len(w.fields) {
				m.fail()
				return
			}
			d.value(m, w.fields[n].id, field(v, w.fields[n].name), depth+1)
		})
	case kindSlice, kindArray:
		n := m.count()
		if v.IsValid() && v.Kind() == reflect.Slice {
			v.SetZero() // empty stays nil, as with gob
			if n > 0 {
				v.Set(reflect.MakeSlice(v.Type(), n, n))
			}
		} else if v.IsValid() && (v.Kind() != reflect.Array || v.Len() != n) {
			m.fail()
			return
		}
		for i := 0; i < n && m.err == nil; i++ {
			d.value(m, w.elem, index(v, i), depth+1)
		}
	case kindMap:
		d.mapValue(m, w, v, depth)
	case kindEncoder:
		m.bytes()
		if v.IsValid() {
			m.fail() // nothing of ours is a GobDecoder
		}
	}
}

func (d *gobDecoder) mapValue(m *gobBuf, w *wireType, v reflect.Value, depth int) {
	if v.IsValid() && v.Kind() != reflect.Map {
		m.fail()
		return
	}
	n := m.count()
	if v.IsValid() {
		v.Set(reflect.MakeMapWithSize(v.Type(), n))
	}
	for i := 0; i < n && m.err == nil; i++ {
		key, elem := reflect.Value{}, reflect.Value{}
		if v.IsValid() {
			key, elem = reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		}
		d.value(m, w.key, key, depth+1)
		d.value(m, w.elem, elem, depth+1)
		if v.IsValid() && m.err == nil {
			v.SetMapIndex(key, elem)
		}
	}
}

// field is v's field of that name, as gob matches them (direct and
// exported only); invalid when v is or has none, so the value is skipped.
func field(v reflect.Value, name string) reflect.Value {
	if !v.IsValid() {
		return v
	}
	f, ok := v.Type().FieldByName(name)
	if !ok || len(f.Index) != 1 || !f.IsExported() {
		return reflect.Value{}
	}
	return v.Field(f.Index[0])
}

func index(v reflect.Value, i int) reflect.Value {
	if !v.IsValid() {
		return v
	}
	return v.Index(i)
}

// gobBuf reads one message; the first error sticks and ends the reading.
type gobBuf struct {
	b   []byte
	err error
}

func (m *gobBuf) fail() {
	if m.err == nil {
		m.err = errGob
	}
	m.b = nil
}

func (m *gobBuf) uint() uint64 {
	if len(m.b) == 0 {
		m.fail()
		return 0
	}
	c := m.b[0]
	m.b = m.b[1:]
	if c < 0x80 {
		return uint64(c)
	}
	n := 256 - int(c) // the byte count, negated
	if n > 8 || n > len(m.b) {
		m.fail()
		return 0
	}
	var x uint64
	for _, c := range m.b[:n] {
		x = x<<8 | uint64(c)
	}
	m.b = m.b[n:]
	return x
}

func (m *gobBuf) int() int64 {
	x := m.uint()
	if x&1 != 0 {
		return ^int64(x >> 1)
	}
	return int64(x >> 1)
}

// float is a float64's bits, byte-reversed.
func (m *gobBuf) float() float64 { return math.Float64frombits(bits.ReverseBytes64(m.uint())) }

func (m *gobBuf) bytes() []byte {
	n := m.count()
	x := m.b[:n]
	m.b = m.b[n:]
	return x
}

// count is a length, bounded by what is left: every element takes a byte
// at least.
func (m *gobBuf) count() int {
	n := m.uint()
	if n > uint64(len(m.b)) {
		m.fail()
		return 0
	}
	return int(n)
}

// set runs assign when v is valid and of kind's family, fails on another.
func (m *gobBuf) set(v reflect.Value, kind reflect.Kind, assign func()) {
	if m.err != nil || !v.IsValid() {
		return
	}
	ok := false
	switch k := v.Kind(); kind {
	case reflect.Int:
		ok = k >= reflect.Int && k <= reflect.Int64
	case reflect.Uint:
		ok = k >= reflect.Uint && k <= reflect.Uintptr
	case reflect.Float64:
		ok = k == reflect.Float32 || k == reflect.Float64
	case reflect.Complex128:
		ok = k == reflect.Complex64 || k == reflect.Complex128
	case reflect.String:
		ok = k == reflect.String || (k == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8)
	default:
		ok = k == kind
	}
	if !ok {
		m.err = fmt.Errorf("%w: a %v where %v is expected", errGob, kind, v.Type())
		return
	}
	assign()
}

// fields calls fn with the number of each field of a struct value, up to
// its end mark; fn reads the field's value.
func (m *gobBuf) fields(fn func(n int)) {
	for n := -1; m.err == nil; {
		delta := m.uint()
		if delta == 0 || m.err != nil {
			return
		}
		if delta > maxMessage {
			m.fail()
			return
		}
		n += int(delta)
		fn(n)
	}
}

// wireType reads a type definition: gob's wireType, whose set field says
// the kind, each a struct that starts with CommonType (name and id).
func (m *gobBuf) wireType() *wireType {
	w := &wireType{kind: -1}
	m.fields(func(kind int) {
		if w.kind >= 0 || kind > int(kindEncoder)+2 {
			m.fail()
			return
		}
		w.kind = wireKind(min(kind, int(kindEncoder)))
		m.fields(func(n int) {
			switch {
			case n == 0:
				m.common()
			case n == 1 && w.kind == kindStruct:
				w.fields = m.wireFields()
			case n == 1 && w.kind == kindMap:
				w.key = m.typeID()
			case (n == 1 && (w.kind == kindSlice || w.kind == kindArray)) || (n == 2 && w.kind == kindMap):
				w.elem = m.typeID()
			case n == 2 && w.kind == kindArray:
				m.int() // the length, which the value repeats
			default:
				m.fail()
			}
		})
	})
	if w.kind < 0 {
		m.fail()
	}
	return w
}

// common reads a CommonType: the type's name and id, which the id that
// the definition comes with makes redundant.
func (m *gobBuf) common() {
	m.fields(func(n int) {
		switch n {
		case 0:
			m.bytes()
		case 1:
			m.int()
		default:
			m.fail()
		}
	})
}

func (m *gobBuf) wireFields() []wireField {
	fs := make([]wireField, m.count())
	for i := range fs {
		m.fields(func(n int) {
			switch n {
			case 0:
				fs[i].name = string(m.bytes())
			case 1:
				fs[i].id = m.typeID()
			default:
				m.fail()
			}
		})
	}
	return fs
}

func (m *gobBuf) typeID() int {
	id := m.int()
	if id <= 0 || id > math.MaxInt32 {
		m.fail()
		return 0
	}
	return int(id)
}
