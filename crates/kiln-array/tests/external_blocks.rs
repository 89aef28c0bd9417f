//! Arrays whose blocks another collection computes (`from_block_tasks`): the blocks' tasks are
//! added once however many consumers read them, and a block of the wrong type or shape fails
//! its own check task, naming the block, instead of reaching a consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_array::{Array, Block, BlockTasks, from_block_tasks};
use kiln_graph::kernel::Identity;
use kiln_graph::{Arg, Collection, GraphBuilder, GraphError, Key, TaskId, Value};
use kiln_local::LocalScheduler;
use ndarray::{ArrayD, IxDyn};

/// One literal block per task, with the number of times the tasks were added.
struct Literals {
    blocks: Vec<Block>,
    added: AtomicUsize,
}

impl BlockTasks for Literals {
    fn add_to(&self, builder: &mut GraphBuilder) -> Result<Vec<TaskId>, GraphError> {
        self.added.fetch_add(1, Ordering::SeqCst);
        self.blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                builder.add(Key::new(format!("literal-{i}")), Arc::new(Identity), [Arg::Literal(Value::new(b.clone()))])
            })
            .collect()
    }
    fn label(&self) -> &'static str {
        "literals"
    }
}

fn column(values: &[f64]) -> Block {
    Block::F64(ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).unwrap())
}

#[test]
fn blocks_from_other_tasks_compose_with_array_operations() {
    let tasks =
        Arc::new(Literals { blocks: vec![column(&[1.0, 2.0]), column(&[3.0, 4.0, 5.0])], added: AtomicUsize::new(0) });
    let x: Array<f64> = from_block_tasks(tasks.clone(), vec![vec![2, 3]]);
    assert_eq!(x.shape(), &[5]);
    // Three readers of every block: the tasks are still added once.
    let y = &(&x * 2.0) + &x - x.mean();
    let got = y.compute_on(&LocalScheduler::new()).unwrap();
    assert_eq!(got.iter().copied().collect::<Vec<f64>>(), vec![0.0, 3.0, 6.0, 9.0, 12.0]);
    assert_eq!(tasks.added.load(Ordering::SeqCst), 1);
}

#[test]
fn a_block_of_the_wrong_shape_or_type_fails_naming_it() {
    let local = LocalScheduler::new();
    let short = Arc::new(Literals { blocks: vec![column(&[1.0, 2.0]), column(&[3.0])], added: AtomicUsize::new(0) });
    let x: Array<f64> = from_block_tasks(short, vec![vec![2, 2]]);
    let err = x.sum().compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("block [1] is a [1] float64 block; the array declared [2] float64"), "{err}");

    let ints = Block::I64(ArrayD::from_shape_vec(IxDyn(&[2]), vec![1, 2]).unwrap());
    let typed = Arc::new(Literals { blocks: vec![ints], added: AtomicUsize::new(0) });
    let x: Array<f64> = from_block_tasks(typed, vec![vec![2]]);
    let err = x.compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("is a [2] int64 block"), "{err}");

    // As many tasks as blocks, or a clear error.
    let few = Arc::new(Literals { blocks: vec![column(&[1.0])], added: AtomicUsize::new(0) });
    let x: Array<f64> = from_block_tasks(few, vec![vec![1, 1]]);
    let err = x.compute_on(&local).unwrap_err().to_string();
    assert!(err.contains("added 1 tasks for an array of 2 blocks"), "{err}");
}
