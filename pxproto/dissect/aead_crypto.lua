-- AES-256-GCM decryption, SHA-256, HMAC-SHA256 and HKDF-SHA256 in plain Lua, for the Parallax
-- dissector's key preference (Wireshark's Lua has no cryptography).  Written from the standards:
-- FIPS 197 (AES), NIST SP 800-38D (GCM), FIPS 180-4 (SHA-256), RFC 2104 (HMAC), RFC 5869 (HKDF).
-- Byte strings in, byte strings out; no Wireshark API, so `lua5.2` runs this chunk alone (it
-- returns its table).  The tables are built at the first use, so a dissector without a key pays
-- nothing.  Lua 5.2 (Wireshark 4.0) has the bit32 library; Lua 5.3+ (Wireshark 4.4) has native
-- operators instead, reached through load() so that this file still parses under 5.2.
local byte, char, sub, rep, concat = string.byte, string.char, string.sub, string.rep, table.concat
local floor = math.floor

local B = bit32
if B == nil then
  B = load("local M = 0xffffffff\n"
    .. "local function bxor(a, b, c, d, e)\n"
    .. "  local r = a ~ b\n"
    .. "  if c then r = r ~ c end\n"
    .. "  if d then r = r ~ d end\n"
    .. "  if e then r = r ~ e end\n"
    .. "  return r & M\n"
    .. "end\n"
    .. "return {bxor = bxor,\n"
    .. "  band = function(a, b) return a & b & M end,\n"
    .. "  bnot = function(a) return ~a & M end,\n"
    .. "  rshift = function(a, n) return (a & M) >> n end,\n"
    .. "  rrotate = function(a, n) a = a & M return ((a >> n) | (a << (32 - n))) & M end}\n")()
end
local bxor, band, bnot, rshift, rrotate = B.bxor, B.band, B.bnot, B.rshift, B.rrotate

local W32 = 4294967296

local function word(s, i)  -- the big-endian 32-bit word at byte i (1-based) of s
  local a, b, c, d = byte(s, i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

local function bytes4(w)
  return char(floor(w / 16777216), floor(w / 65536) % 256, floor(w / 256) % 256, w % 256)
end

-- ------------------------------------------------------------ SHA-256 (FIPS 180-4)

local K, H0  -- round constants and initial hash value, computed from their definitions (4.2.2, 5.3.3)

local function frac32(x) return floor((x - floor(x)) * W32) end

local function sha_init()
  local primes, n = {}, 2
  while #primes < 64 do
    local prime = true
    for _, p in ipairs(primes) do
      if p * p > n then break end
      if n % p == 0 then prime = false break end
    end
    if prime then primes[#primes + 1] = n end
    n = n + 1
  end
  K, H0 = {}, {}
  for i, p in ipairs(primes) do
    local c = p ^ (1 / 3)
    c = c - (c * c * c - p) / (3 * c * c)  -- one Newton step: the cube root to the last bit
    K[i] = frac32(c)
    if i <= 8 then H0[i] = frac32(math.sqrt(p)) end
  end
end

local function sha256(msg)
  if K == nil then sha_init() end
  local len = #msg
  local bits = len * 8
  msg = msg .. "\128" .. rep("\0", (55 - len) % 64) .. bytes4(floor(bits / W32)) .. bytes4(bits % W32)
  local h1, h2, h3, h4, h5, h6, h7, h8 = H0[1], H0[2], H0[3], H0[4], H0[5], H0[6], H0[7], H0[8]
  local w = {}
  for at = 1, #msg, 64 do
    for t = 1, 16 do w[t] = word(msg, at + (t - 1) * 4) end
    for t = 17, 64 do
      local a, b = w[t - 15], w[t - 2]
      local s0 = bxor(rrotate(a, 7), rrotate(a, 18), rshift(a, 3))
      local s1 = bxor(rrotate(b, 17), rrotate(b, 19), rshift(b, 10))
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) % W32
    end
    local a, b, c, d, e, f, g, h = h1, h2, h3, h4, h5, h6, h7, h8
    for t = 1, 64 do
      local s1 = bxor(rrotate(e, 6), rrotate(e, 11), rrotate(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = h + s1 + ch + K[t] + w[t]
      local s0 = bxor(rrotate(a, 2), rrotate(a, 13), rrotate(a, 22))
      local maj = bxor(band(a, b), band(a, c), band(b, c))
      h, g, f, e, d, c, b, a = g, f, e, (d + t1) % W32, c, b, a, (t1 + s0 + maj) % W32
    end
    h1, h2, h3, h4 = (h1 + a) % W32, (h2 + b) % W32, (h3 + c) % W32, (h4 + d) % W32
    h5, h6, h7, h8 = (h5 + e) % W32, (h6 + f) % W32, (h7 + g) % W32, (h8 + h) % W32
  end
  return concat({bytes4(h1), bytes4(h2), bytes4(h3), bytes4(h4), bytes4(h5), bytes4(h6), bytes4(h7), bytes4(h8)})
end

-- ------------------------------------------------------------ HMAC (RFC 2104), HKDF (RFC 5869)

local function xor_pad(key, pad)
  local out = {}
  for i = 1, 64 do out[i] = char(bxor(byte(key, i), pad)) end
  return concat(out)
end

local function hmac_sha256(key, msg)
  if #key > 64 then key = sha256(key) end
  key = key .. rep("\0", 64 - #key)
  return sha256(xor_pad(key, 0x5c) .. sha256(xor_pad(key, 0x36) .. msg))
end

-- HKDF-SHA256: extract (salt nil: 32 zero bytes, RFC 5869 2.2), then expand to len bytes.
local function hkdf_sha256(salt, ikm, info, len)
  local prk = hmac_sha256(salt or rep("\0", 32), ikm)
  local out, t = {}, ""
  for i = 1, math.ceil(len / 32) do
    t = hmac_sha256(prk, t .. info .. char(i))
    out[i] = t
  end
  return sub(concat(out), 1, len)
end

-- ------------------------------------------------------------ AES-256 (FIPS 197), encryption only

local SBOX, TE0, TE1, TE2, TE3

local function xtime(b)  -- b * x in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1
  if b >= 128 then return bxor((b * 2) % 256, 0x1b) end
  return b * 2
end

local function aes_init()
  -- Multiplicative inverses from the powers of the generator 3 (5.1.1), then the affine map.
  local exp, log = {}, {}
  local x = 1
  for i = 0, 254 do
    exp[i], log[x] = x, i
    x = bxor(x, xtime(x))
  end
  SBOX, TE0, TE1, TE2, TE3 = {}, {}, {}, {}, {}
  for a = 0, 255 do
    local b = a == 0 and 0 or exp[(255 - log[a]) % 255]
    local s = b
    for _ = 1, 4 do
      b = (b * 2) % 256 + floor(b / 128)  -- rotate left by one bit
      s = bxor(s, b)
    end
    s = bxor(s, 0x63)
    SBOX[a] = s
    local s2 = xtime(s)
    local s3 = bxor(s2, s)
    -- MixColumns of a column holding s in one row (5.1.3), as four rotations of one word.
    TE0[a] = ((s2 * 256 + s) * 256 + s) * 256 + s3
    TE1[a] = ((s3 * 256 + s2) * 256 + s) * 256 + s
    TE2[a] = ((s * 256 + s3) * 256 + s2) * 256 + s
    TE3[a] = ((s * 256 + s) * 256 + s3) * 256 + s2
  end
end

local function sub_word(w)
  return ((SBOX[floor(w / 16777216)] * 256 + SBOX[floor(w / 65536) % 256]) * 256 + SBOX[floor(w / 256) % 256]) * 256
         + SBOX[w % 256]
end

-- The 60 round-key words of a 32-byte key (5.2, Nk = 8, Nr = 14).
local function expand_key(key)
  if SBOX == nil then aes_init() end
  local w = {}
  for i = 0, 7 do w[i] = word(key, i * 4 + 1) end
  local rcon = 1
  for i = 8, 59 do
    local t = w[i - 1]
    if i % 8 == 0 then
      t = bxor(sub_word((t * 256) % W32 + floor(t / 16777216)), rcon * 16777216)  -- SubWord(RotWord(t)) ^ Rcon
      rcon = xtime(rcon)
    elseif i % 8 == 4 then
      t = sub_word(t)
    end
    w[i] = bxor(w[i - 8], t)
  end
  return w
end

-- One block (four words) through the cipher under round keys w (5.1).
local function encrypt_block(w, s0, s1, s2, s3)
  s0, s1, s2, s3 = bxor(s0, w[0]), bxor(s1, w[1]), bxor(s2, w[2]), bxor(s3, w[3])
  for r = 4, 52, 4 do
    s0, s1, s2, s3 =
      bxor(TE0[floor(s0 / 16777216)], TE1[floor(s1 / 65536) % 256], TE2[floor(s2 / 256) % 256], TE3[s3 % 256], w[r]),
      bxor(TE0[floor(s1 / 16777216)], TE1[floor(s2 / 65536) % 256], TE2[floor(s3 / 256) % 256], TE3[s0 % 256],
           w[r + 1]),
      bxor(TE0[floor(s2 / 16777216)], TE1[floor(s3 / 65536) % 256], TE2[floor(s0 / 256) % 256], TE3[s1 % 256],
           w[r + 2]),
      bxor(TE0[floor(s3 / 16777216)], TE1[floor(s0 / 65536) % 256], TE2[floor(s1 / 256) % 256], TE3[s2 % 256],
           w[r + 3])
  end
  local S = SBOX
  return
    bxor(((S[floor(s0 / 16777216)] * 256 + S[floor(s1 / 65536) % 256]) * 256 + S[floor(s2 / 256) % 256]) * 256
         + S[s3 % 256], w[56]),
    bxor(((S[floor(s1 / 16777216)] * 256 + S[floor(s2 / 65536) % 256]) * 256 + S[floor(s3 / 256) % 256]) * 256
         + S[s0 % 256], w[57]),
    bxor(((S[floor(s2 / 16777216)] * 256 + S[floor(s3 / 65536) % 256]) * 256 + S[floor(s0 / 256) % 256]) * 256
         + S[s1 % 256], w[58]),
    bxor(((S[floor(s3 / 16777216)] * 256 + S[floor(s0 / 65536) % 256]) * 256 + S[floor(s1 / 256) % 256]) * 256
         + S[s2 % 256], w[59])
end

-- ------------------------------------------------------------ GCM (SP 800-38D)
-- Blocks are four big-endian words; bit 0 of a block (the leftmost) is the coefficient of x^0.
-- GHASH multiplies by H four bits at a time: M[n] = n * H for the 16 values of a nibble (n = 8 is
-- H itself, 4 is H*x, 2 is H*x^2, 1 is H*x^3), and Z*x^4 drops four bits whose reduction by
-- x^128 = 1 + x + x^2 + x^7 (R = 0xE1 || 0^120) lands in the top 16 bits: LAST4.

local LAST4

local function gcm_init()
  LAST4 = {}
  for rem = 0, 15 do
    local v = 0
    for j = 0, 3 do
      if floor(rem / 2 ^ (3 - j)) % 2 == 1 then v = bxor(v, floor(0xE100 / 2 ^ j)) end
    end
    LAST4[rem] = v * 65536
  end
end

local function times_x(a, b, c, d)  -- one bit right; the dropped bit 127 reduced by R
  local low = d % 2
  d = floor(d / 2) + (c % 2) * 2147483648
  c = floor(c / 2) + (b % 2) * 2147483648
  b = floor(b / 2) + (a % 2) * 2147483648
  a = floor(a / 2)
  if low == 1 then a = bxor(a, 0xE1000000) end
  return a, b, c, d
end

-- The cipher state of one key: round keys and GHASH's table for H = E(K, 0^128).
local function gcm_key(key)
  if #key ~= 32 then error("AES-256 needs a 32-byte key, not " .. #key, 2) end
  if LAST4 == nil then gcm_init() end
  local w = expand_key(key)
  local m0, m1, m2, m3 = {[0] = 0}, {[0] = 0}, {[0] = 0}, {[0] = 0}
  local a, b, c, d = encrypt_block(w, 0, 0, 0, 0)
  for _, n in ipairs({8, 4, 2, 1}) do
    m0[n], m1[n], m2[n], m3[n] = a, b, c, d
    a, b, c, d = times_x(a, b, c, d)
  end
  for n = 3, 15 do
    local a2, b2, c2, d2 = 0, 0, 0, 0
    for _, bit in ipairs({8, 4, 2, 1}) do
      if floor(n / bit) % 2 == 1 then
        a2, b2, c2, d2 = bxor(a2, m0[bit]), bxor(b2, m1[bit]), bxor(c2, m2[bit]), bxor(d2, m3[bit])
      end
    end
    m0[n], m1[n], m2[n], m3[n] = a2, b2, c2, d2
  end
  return {w = w, m0 = m0, m1 = m1, m2 = m2, m3 = m3}
end

-- (y0..y3 ^ x0..x3) * H
local function ghash_block(k, y0, y1, y2, y3, x0, x1, x2, x3)
  local m0, m1, m2, m3, last4 = k.m0, k.m1, k.m2, k.m3, LAST4
  local x = {bxor(y0, x0), bxor(y1, x1), bxor(y2, x2), bxor(y3, x3)}
  local z0, z1, z2, z3 = 0, 0, 0, 0
  for wi = 4, 1, -1 do
    local v = x[wi]
    for _ = 1, 8 do  -- the word's nibbles, last (rightmost, highest powers of x) first
      local n = v % 16
      v = floor(v / 16)
      local rem = z3 % 16
      z3 = bxor(floor(z3 / 16) + (z2 % 16) * 268435456, m3[n])
      z2 = bxor(floor(z2 / 16) + (z1 % 16) * 268435456, m2[n])
      z1 = bxor(floor(z1 / 16) + (z0 % 16) * 268435456, m1[n])
      z0 = bxor(floor(z0 / 16), last4[rem], m0[n])
    end
  end
  return z0, z1, z2, z3
end

-- GHASH of s zero-padded to whole blocks, continuing from y.
local function ghash_string(k, y0, y1, y2, y3, s)
  local n = #s
  if n % 16 ~= 0 then s = s .. rep("\0", 16 - n % 16) end
  for at = 1, #s, 16 do
    y0, y1, y2, y3 = ghash_block(k, y0, y1, y2, y3, word(s, at), word(s, at + 4), word(s, at + 8), word(s, at + 12))
  end
  return y0, y1, y2, y3
end

-- The plaintext of ciphertext ct under key state k (gcm_key) with a 12-byte iv, associated data aad
-- and 16-byte tag; nil when the tag does not verify (nothing decrypted is returned then).
local function gcm_open(k, iv, ct, aad, tag)
  if #iv ~= 12 or #tag ~= 16 then error("GCM here takes a 12-byte IV and a 16-byte tag", 2) end
  local i0, i1, i2 = word(iv, 1), word(iv, 5), word(iv, 9)
  local w = k.w
  local y0, y1, y2, y3 = ghash_string(k, 0, 0, 0, 0, aad)
  y0, y1, y2, y3 = ghash_string(k, y0, y1, y2, y3, ct)
  local abits, cbits = #aad * 8, #ct * 8
  y0, y1, y2, y3 = ghash_block(k, y0, y1, y2, y3, floor(abits / W32), abits % W32, floor(cbits / W32), cbits % W32)
  local e0, e1, e2, e3 = encrypt_block(w, i0, i1, i2, 1)  -- J0 = IV || 0^31 || 1
  local want = bytes4(bxor(e0, y0)) .. bytes4(bxor(e1, y1)) .. bytes4(bxor(e2, y2)) .. bytes4(bxor(e3, y3))
  if want ~= tag then return nil end
  local out, n = {}, #ct
  local padded = n % 16 == 0 and ct or ct .. rep("\0", 16 - n % 16)
  local ctr = 1
  for at = 1, n, 16 do
    ctr = (ctr + 1) % W32  -- inc32
    local k0, k1, k2, k3 = encrypt_block(w, i0, i1, i2, ctr)
    out[#out + 1] = bytes4(bxor(word(padded, at), k0)) .. bytes4(bxor(word(padded, at + 4), k1))
                    .. bytes4(bxor(word(padded, at + 8), k2)) .. bytes4(bxor(word(padded, at + 12), k3))
  end
  return sub(concat(out), 1, n)
end

-- One block through AES-256 (for the known-answer tests of FIPS 197 C.3).
local function aes256_block(key, block)
  local w = expand_key(key)
  local a, b, c, d = encrypt_block(w, word(block, 1), word(block, 5), word(block, 9), word(block, 13))
  return bytes4(a) .. bytes4(b) .. bytes4(c) .. bytes4(d)
end

return {
  sha256 = sha256,
  hmac_sha256 = hmac_sha256,
  hkdf_sha256 = hkdf_sha256,
  aes256_block = aes256_block,
  gcm_key = gcm_key,
  gcm_open = gcm_open,
}
