//! C2SP tlog-tiles Merkle log (under construction).
