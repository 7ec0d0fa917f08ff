//! The backend connection types as pooled connections: each resets, checks and closes
//! itself with what `crate::backend` gives it.

use std::future::Future;

use super::{Carried, Pooled};
use crate::backend::mysql::{self, MysqlConn};
use crate::backend::postgres::{self, BackendConn};

impl Pooled for BackendConn {
    type ResetError = postgres::ResetError;

    fn reset(&mut self) -> impl Future<Output = Result<(), Self::ResetError>> + Send {
        BackendConn::reset(self)
    }

    fn is_closed(&mut self) -> bool {
        BackendConn::is_closed(self)
    }

    fn carried(&mut self) -> &mut Carried {
        &mut self.carried
    }

    fn set_leased(&mut self, leased: bool) {
        self.set_attached(leased);
    }

    fn close(self) -> impl Future<Output = ()> + Send {
        self.terminate()
    }
}

impl Pooled for MysqlConn {
    type ResetError = mysql::ResetError;

    fn reset(&mut self) -> impl Future<Output = Result<(), Self::ResetError>> + Send {
        MysqlConn::reset(self)
    }

    fn is_closed(&mut self) -> bool {
        MysqlConn::is_closed(self)
    }

    fn carried(&mut self) -> &mut Carried {
        &mut self.carried
    }

    fn set_leased(&mut self, leased: bool) {
        self.set_attached(leased);
    }

    fn close(self) -> impl Future<Output = ()> + Send {
        self.quit()
    }
}
