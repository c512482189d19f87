//! The typed layer: messages as [`Pod`] values (in the style of Vista's typed layer), so
//! applications exchange `#[repr(C)]` structs instead of byte slices.
//!
//! A message whose size is not the size of the type is an [`Error::MessageSize`]. For a
//! received *request* the error comes after the request was taken in this transaction
//! (it is in the response table as received): the server may answer it with
//! [`VgTx::send_response`] (e.g. an error reply) or abort.

use std::mem::size_of;
use std::net::SocketAddr;
use std::time::Duration;

use vista::Pod;

use crate::endpoint::VgTx;
use crate::error::{Error, Result};
use crate::RequestId;

fn decode<T: Pod>(id: RequestId, b: &[u8]) -> Result<T> {
    bytemuck::try_pod_read_unaligned(b).map_err(|_| Error::MessageSize {
        id,
        expected: size_of::<T>(),
        got: b.len(),
    })
}

impl VgTx<'_, '_> {
    /// [`VgTx::send_request`] of a typed message.
    pub fn send_request_typed<T: Pod>(&mut self, to: SocketAddr, msg: &T) -> Result<RequestId> {
        self.send_request(to, bytemuck::bytes_of(msg))
    }

    /// [`VgTx::receive_request`] of a typed message.
    pub fn receive_request_typed<T: Pod>(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(RequestId, T)>> {
        match self.receive_request(timeout)? {
            Some((id, b)) => Ok(Some((id, decode(id, &b)?))),
            None => Ok(None),
        }
    }

    /// [`VgTx::send_response`] of a typed message.
    pub fn send_response_typed<T: Pod>(&mut self, id: RequestId, msg: &T) -> Result<()> {
        self.send_response(id, bytemuck::bytes_of(msg))
    }

    /// [`VgTx::receive_response`] of a typed message.
    pub fn receive_response_typed<T: Pod>(
        &mut self,
        id: RequestId,
        timeout: Option<Duration>,
    ) -> Result<Option<T>> {
        match self.receive_response(id, timeout)? {
            Some(b) => Ok(Some(decode(id, &b)?)),
            None => Ok(None),
        }
    }
}
